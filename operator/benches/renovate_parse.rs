//! Parse throughput of Renovate's JSON log: `cargo bench -p fluxup-operator --bench renovate_parse`.
//! Prints MB/s on a synthetic log shaped like a real one (many debug lines, one large findings
//! record). Goal: at least 100 MB/s.

use fluxup_operator::renovate::parse_log;
use std::fmt::Write as _;
use std::time::Instant;

/// About `target_mb` MB of log: debug chatter around one findings record listing `apps` apps.
fn synthetic_log(target_mb: usize, apps: usize) -> Vec<u8> {
    let mut files = String::new();
    for i in 0..apps {
        if i > 0 {
            files.push(',');
        }
        write!(
            files,
            r#"{{"deps":[{{"depName":"chart-{i}","currentValue":"1.{i}.0","datasource":"helm","registryUrls":["http://127.0.0.1:18040"],"updates":[{{"newVersion":"1.{i}.1","newValue":"1.{i}.1","updateType":"patch","releaseTimestamp":"2026-11-01T00:00:00.000Z"}},{{"newVersion":"2.0.0","newValue":"2.0.0","updateType":"major"}}]}}],"packageFile":"apps/app-{i}/helmrelease.yaml"}}"#
        )
        .unwrap();
    }
    let findings = format!(
        r#"{{"name":"renovate","level":20,"repository":"fluxup/fleet","config":{{"flux":[{files}]}},"msg":"packageFiles with updates","time":"2026-11-29T10:00:00.000Z","v":0}}"#
    );
    let mut log = String::with_capacity(target_mb * 1_000_000 + findings.len());
    let mut n = 0;
    while log.len() < target_mb * 1_000_000 {
        writeln!(
            log,
            r#"{{"name":"renovate","hostname":"renovate-29342-abcde","pid":7,"level":20,"logContext":"f0b9c1","repository":"fluxup/fleet","packageFile":"apps/app-{n}/helmrelease.yaml","dependency":"chart-{n}","msg":"Looking up chart-{n} in repository http://127.0.0.1:18040","time":"2026-11-29T10:00:00.000Z","v":0}}"#
        )
        .unwrap();
        n += 1;
        if n == 1000 {
            log.push_str(&findings);
            log.push('\n');
        }
    }
    log.into_bytes()
}

fn main() {
    let log = synthetic_log(200, 1000);
    let mb = log.len() as f64 / 1_000_000.0;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        let findings = parse_log(&log).expect("the synthetic log parses");
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(findings.package_files.len(), 1000);
        best = best.min(secs);
    }
    println!(
        "renovate_parse: {mb:.0} MB log with 1000 package files: best of 5 {:.1} ms, {:.0} MB/s (goal >= 100 MB/s)",
        best * 1000.0,
        mb / best
    );
}
