//! What both benchmarks share: putting the seed table back after a run.

use tokio_postgres::Client;

/// Puts the original `post_tag` back under its name, without an identity,
/// after an engine run (which leaves it as `post_tag_old`), and drops what
/// the run or the floor left (`extra`: more statements, run first).
pub async fn put_back_post_tag(db: &Client, extra: &str) {
    db.batch_execute(&format!(
        "{extra}
         DO $$ BEGIN
           IF to_regclass('public.post_tag_old') IS NOT NULL THEN
             DROP TABLE IF EXISTS public.post_tag;
             ALTER TABLE public.post_tag_old RENAME TO post_tag;
           END IF;
         END $$;
         DROP TABLE IF EXISTS public.post_tag_new;
         ALTER TABLE public.post_tag ALTER COLUMN id DROP IDENTITY IF EXISTS;
         CHECKPOINT;"
    ))
    .await
    .expect("put the table back");
}
