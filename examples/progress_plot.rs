//! Scrapes `identity-migrator run --metrics-addr` until the run ends, then
//! draws rows per second and the adaptive pace over time as a PNG.
//! `./scripts/demo` runs it beside the demo's migration:
//!   progress_plot --metrics 127.0.0.1:9464 --out docs/demo-progress.png

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use plotters::prelude::*;

/// One scrape: seconds since the first, rows copied, pace (0: unlimited).
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: f64,
    rows: f64,
    pace: f64,
}

/// `/metrics` over plain HTTP/1.0; None when nothing answers.
fn scrape(addr: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_string())
}

/// The value of the first series of `metric`, or the sum over its series.
fn value(exposition: &str, metric: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut addr, mut out, mut wait) = (String::new(), String::from("progress.png"), 120u64);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--metrics" => addr = args.next().expect("--metrics HOST:PORT"),
            "--out" => out = args.next().expect("--out PATH"),
            "--wait" => wait = args.next().expect("--wait SECONDS").parse().expect("seconds"),
            other => panic!("unknown argument {other}"),
        }
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut first: Option<Instant> = None;
    loop {
        match scrape(&addr) {
            Some(text) if text.contains("identity_migrator_copied_rows") => {
                let t0 = *first.get_or_insert_with(Instant::now);
                samples.push(Sample {
                    at: t0.elapsed().as_secs_f64(),
                    rows: value(&text, "identity_migrator_rows_copied_total"),
                    pace: value(&text, "identity_migrator_pace_rows_per_second"),
                });
            }
            Some(_) => {}
            // The run has ended (or not started yet).
            None if first.is_some() => break,
            None if started.elapsed() > Duration::from_secs(wait) => break,
            None => {}
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    if samples.len() < 2 {
        eprintln!("progress_plot: too few samples from {addr} to draw");
        std::process::exit(1);
    }
    draw(&out, &samples);
    eprintln!("progress plot written to {out} ({} samples)", samples.len());
}

/// Rows per second between scrapes, smoothed over a second.
fn rates(samples: &[Sample]) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut j = 0;
    for (i, s) in samples.iter().enumerate() {
        while samples[j].at < s.at - 1.0 {
            j += 1;
        }
        if i > j {
            let b = &samples[j];
            out.push((s.at, (s.rows - b.rows) / (s.at - b.at)));
        }
    }
    out
}

fn draw(path: &str, samples: &[Sample]) {
    let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").ok();
    if let Some(font) = font {
        plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(font.into_boxed_slice())).ok();
    }
    let rates = rates(samples);
    let end = samples.last().map_or(1.0, |s| s.at).max(1.0);
    let top = rates.iter().map(|r| r.1).chain(samples.iter().map(|s| s.pace)).fold(1.0, f64::max) * 1.1;
    let root = BitMapBackend::new(path, (960, 480)).into_drawing_area();
    root.fill(&WHITE).expect("fill");
    let mut chart = ChartBuilder::on(&root)
        .caption("The demo's copy: rows per second and the pace, from its metrics", ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..end, 0.0..top)
        .expect("chart");
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("rows per second")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .label_style(("sans-serif", 14))
        .draw()
        .expect("mesh");
    chart
        .draw_series(LineSeries::new(rates.iter().copied(), BLUE.stroke_width(2)))
        .expect("rates")
        .label("rows copied per second")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    let paced = samples.iter().any(|s| s.pace > 0.0);
    let pace_label = if paced { "adaptive pace" } else { "pace: unlimited (no copy.pace)" };
    chart
        .draw_series(LineSeries::new(samples.iter().map(|s| (s.at, s.pace)), RED.stroke_width(2)))
        .expect("pace")
        .label(pace_label)
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .expect("legend");
    root.present().expect("write the PNG");
}
