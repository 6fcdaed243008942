//! What the window's change capture costs the application's writes
//! (`scripts/bench --capture`): four writers insert, update and delete single
//! rows by key for a few seconds, with the capture's trigger off and on, in
//! turn, three times each after a round that warms the caches; writes per second and the median and 99th percentile
//! latency of one write. The trigger is the engine's own
//! (`engine::plan::capture`), made on a table of the migrations' usual shape.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use identity_migrator::engine::plan::capture::Capture;
use identity_migrator::engine::plan::shape::TableName;
use tokio_postgres::{Client, NoTls};

const WRITERS: usize = 4;
const ROWS: i64 = 100_000;

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

/// One writer's latencies (microseconds) until `stop`.
async fn write(url: String, stop: Arc<AtomicBool>, next_id: Arc<AtomicI64>, seed: u64) -> Vec<u64> {
    let c = connect(&url).await;
    let insert = c.prepare("INSERT INTO capture_cost (id, v, note) VALUES ($1, 1, 'new')").await.unwrap();
    let update = c.prepare("UPDATE capture_cost SET v = v + 1 WHERE id = $1").await.unwrap();
    let delete = c.prepare("DELETE FROM capture_cost WHERE id = $1").await.unwrap();
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let id = (state % ROWS as u64) as i64 + 1;
        let started = Instant::now();
        match state % 10 {
            0..4 => c.execute(&insert, &[&next_id.fetch_add(1, Ordering::Relaxed)]).await,
            4..8 => c.execute(&update, &[&id]).await,
            _ => c.execute(&delete, &[&id]).await,
        }
        .expect("write");
        latencies.push(started.elapsed().as_micros() as u64);
    }
    latencies
}

/// Writes for `seconds`; (writes per second, p50 µs, p99 µs).
async fn measure(url: &str, seconds: u64, next_id: &Arc<AtomicI64>) -> (f64, u64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(write(url.to_string(), stop.clone(), next_id.clone(), w as u64 + 1)))
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for w in writers {
        all.extend(w.await.unwrap());
    }
    all.sort_unstable();
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    (all.len() as f64 / seconds as f64, at(0.5), at(0.99))
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut url, mut seconds) = (String::new(), 8);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--url" => url = args.next().expect("--url URL"),
            "--seconds" => seconds = args.next().and_then(|s| s.parse().ok()).expect("--seconds N"),
            _ => {}
        }
    }
    let db = connect(&url).await;
    db.batch_execute(&format!(
        "DROP TABLE IF EXISTS capture_cost, capture_cost_new_log CASCADE;
         CREATE TABLE capture_cost (id bigint PRIMARY KEY, v integer NOT NULL, note text);
         INSERT INTO capture_cost SELECT g, 0, 'row ' || g FROM generate_series(1, {ROWS}) g;"
    ))
    .await
    .unwrap();
    // Alone: VACUUM refuses a transaction block.
    db.batch_execute("VACUUM ANALYZE capture_cost").await.unwrap();
    let table = TableName::new("public", "capture_cost");
    let capture = Capture::of(&table.sibling("capture_cost_new"));
    let next_id = Arc::new(AtomicI64::new(10 * ROWS));
    // A first round warms the caches and is not counted.
    measure(&url, 2, &next_id).await;
    println!("| capture | writes/s | p50 | p99 |\n| --- | ---: | ---: | ---: |");
    let mut totals = [0.0f64; 2];
    for round in 0..6 {
        let on = round % 2 == 1;
        for sql in if on { capture.create(&table, "id") } else { capture.drop_triggers(&table) } {
            db.batch_execute(&sql).await.unwrap();
        }
        let (rate, p50, p99) = measure(&url, seconds, &next_id).await;
        totals[on as usize] += rate;
        let logged: i64 = if on {
            db.query_one(&format!("SELECT count(*) FROM {}", capture.log), &[]).await.unwrap().get(0)
        } else {
            0
        };
        let what = if on { format!("on ({logged} ids noted)") } else { "off".to_string() };
        println!("| {what} | {rate:.0} | {:.2} ms | {:.2} ms |", p50 as f64 / 1000.0, p99 as f64 / 1000.0);
        if on {
            db.batch_execute(&capture.reset()).await.unwrap();
        }
    }
    println!("writes/s with the capture: {:.1}% of without", 100.0 * totals[1] / totals[0]);
    for sql in capture.drop_triggers(&table).into_iter().chain(capture.drop_objects()) {
        db.batch_execute(&sql).await.unwrap();
    }
    db.batch_execute("DROP TABLE capture_cost").await.unwrap();
}
