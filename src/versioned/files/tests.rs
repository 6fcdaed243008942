use super::*;

fn file(name: &str, text: &str) -> SourceFile {
    SourceFile { name: name.into(), text: text.into() }
}

fn versions(files: &[VersionedFile]) -> Vec<&str> {
    files.iter().map(|f| f.version.text.as_str()).collect()
}

#[test]
fn flyway_files_are_read_by_version_with_repeatables_last_and_undo_files_left_out() {
    // As `flyway` users name them: V<version>__<description>.sql, dots or underscores.
    let files = [
        file("V2__backfill_status.sql", "UPDATE orders SET status = 'new';\n"),
        file("V1__create_tables.sql", "CREATE TABLE orders (id bigint PRIMARY KEY);\n"),
        file("V1_10__later.sql", "SELECT 1;\n"),
        file("V1.9__earlier.sql", "SELECT 1;\n"),
        file("R__order_views.sql", "CREATE OR REPLACE VIEW v AS SELECT 1;\n"),
        file("U2__backfill_status.sql", "UPDATE orders SET status = NULL;\n"),
        file("README.md", "# migrations\n"),
    ];
    assert_eq!(detect(&files), Format::Flyway);
    let read = read(&files, Format::Auto).unwrap();
    assert_eq!(versions(&read), ["1", "1.9", "1.10", "2", "order views"]);
    assert_eq!(read[0].description, "create tables");
    assert!(read[4].repeatable && !read[3].repeatable);
    assert_eq!(read[3].first_line, 1);
    let bad = read_one(&file("V_x.sql", ""), Format::Flyway).unwrap_err();
    assert!(bad.to_string().contains("V<version>__<description>.sql"), "{bad}");
}

#[test]
fn golang_migrate_runs_the_up_files_and_never_the_down_files() {
    // `migrate create -ext sql -dir db -seq create_users` writes both.
    let files = [
        file("000001_create_users.up.sql", "CREATE TABLE users (id bigint PRIMARY KEY);"),
        file("000001_create_users.down.sql", "DROP TABLE users;"),
        file("000002_add_email.up.sql", "ALTER TABLE users ADD COLUMN email text;"),
        file("000002_add_email.down.sql", "ALTER TABLE users DROP COLUMN email;"),
    ];
    assert_eq!(detect(&files), Format::GolangMigrate);
    let read = read(&files, Format::Auto).unwrap();
    assert_eq!(versions(&read), ["000001", "000002"]);
    assert_eq!(read[1].description, "add email");
    assert!(read.iter().all(|f| !f.sql.contains("DROP")));
}

#[test]
fn goose_takes_the_part_under_up_with_its_statement_blocks_and_its_lines() {
    // As `goose create add_trigger_fn sql` writes a file, filled in.
    let text = "-- +goose Up\n\
                -- +goose StatementBegin\n\
                CREATE FUNCTION touch() RETURNS trigger AS $$\n\
                BEGIN NEW.updated := now(); RETURN NEW; END;\n\
                $$ LANGUAGE plpgsql;\n\
                -- +goose StatementEnd\n\
                \n\
                -- +goose Down\n\
                -- +goose StatementBegin\n\
                DROP FUNCTION touch();\n\
                -- +goose StatementEnd\n";
    let files = [file("20240101120000_add_trigger_fn.sql", text)];
    assert_eq!(detect(&files), Format::Goose);
    let read = read(&files, Format::Auto).unwrap();
    assert_eq!(read[0].version.text, "20240101120000");
    assert_eq!(read[0].first_line, 2, "the up part starts under the marker");
    assert!(read[0].sql.contains("$$ LANGUAGE plpgsql;") && !read[0].sql.contains("DROP FUNCTION"));
    let no_up = read_one(&file("1_x.sql", "SELECT 1;"), Format::Goose).unwrap_err();
    assert_eq!(no_up, FilesError::NoUpMarker { file: "1_x.sql".into(), marker: "-- +goose Up" });
}

#[test]
fn dbmate_takes_the_part_under_migrate_up_with_options() {
    // `dbmate new create_users_table` writes the two markers; options may follow.
    let text = "-- migrate:up transaction:false\nCREATE TABLE users (id bigint PRIMARY KEY);\n\n-- migrate:down\nDROP TABLE users;\n";
    let files = [file("20151127184807_create_users_table.sql", text)];
    assert_eq!(detect(&files), Format::Dbmate);
    let read = read(&files, Format::Auto).unwrap();
    assert_eq!(read[0].sql, "CREATE TABLE users (id bigint PRIMARY KEY);\n\n");
    assert_eq!((read[0].first_line, read[0].description.as_str()), (2, "create users table"));
}

#[test]
fn plain_files_run_in_name_order_and_two_files_may_not_share_a_version() {
    let files = [file("10_b.sql", "SELECT 2;"), file("9_a.sql", "SELECT 1;"), file("seed.sql", "SELECT 3;")];
    assert_eq!(detect(&files), Format::Plain);
    assert_eq!(versions(&read(&files, Format::Auto).unwrap()), ["9", "10", "seed"]);
    let twice = [file("1_a.sql", "SELECT 1;"), file("01_b.sql", "SELECT 2;"), file("1_c.sql", "SELECT 3;")];
    assert!(matches!(read(&twice, Format::Plain), Err(FilesError::Duplicate { .. })));
    assert_eq!(read(&[file("notes.txt", "")], Format::Plain), Err(FilesError::Empty));
}

#[test]
fn a_checksum_ignores_line_ends_but_not_a_changed_character() {
    assert_eq!(checksum("SELECT 1;\r\n"), checksum("SELECT 1;\n"));
    assert_ne!(checksum("SELECT 1;\n"), checksum("SELECT 2;\n"));
    assert_eq!(checksum("").len(), 64);
}
