//! The `--spa` report as a markdown table, one row per daemon.

use std::fmt::Write;

use super::spa::SpaReport;

/// The table, the load and, loudly, a missing fwknopd.
pub fn table(r: &SpaReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "SPA side by side (load average before: {}; after: {})\n",
        r.loadavg_before, r.loadavg_after
    );
    s.push_str(
        "| daemon | firewall | clients | quiet p50 ms (min–max, n) | forged sent | CPU over flood \
         | real knocks opened | open p50 under flood | kernel drops | refused by hint |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for row in &r.rows {
        let min = row.quiet_ms.iter().copied().fold(f64::INFINITY, f64::min);
        let max = row.quiet_ms.iter().copied().fold(0.0, f64::max);
        let rate = row.forged_sent as f64 / row.flood_s.max(1e-9);
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.3} ({:.3}–{:.3}, {}) | {} in {:.1} s = {:.0}/s (asked {}) \
             | {:.2} s = {:.3} core | {}/{} | {} | {} | {} |",
            row.daemon,
            row.firewall,
            row.clients,
            row.quiet_p50_ms,
            min,
            max,
            row.quiet_ms.len(),
            row.forged_sent,
            row.flood_s,
            rate,
            row.flood_pps_asked,
            row.flood_cpu_s,
            row.flood_cores,
            row.real_opened,
            row.real_knocks,
            ms_or_dash(row.flood_open_p50_ms),
            row.kernel_drops,
            row.refused_unknown_hint
                .map_or_else(|| "–".to_string(), |n| n.to_string()),
        );
    }
    if let Some(why) = &r.fwknop_missing {
        let _ = writeln!(s, "\n***** fwknopd NOT MEASURED: {why} *****");
    }
    s
}

/// `12.345 ms`, or `–` when nothing was measured (no knock opened).
fn ms_or_dash(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3} ms")
    } else {
        "–".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spa::SpaResult;

    fn row(daemon: &str, hint: Option<u64>) -> SpaResult {
        SpaResult {
            daemon: daemon.into(),
            firewall: "iptables".into(),
            clients: 1,
            quiet_ms: vec![40.0, 60.0, 50.0],
            quiet_p50_ms: 50.0,
            flood_pps_asked: 30_000,
            forged_sent: 300_000,
            flood_s: 10.0,
            flood_cpu_s: 0.5,
            flood_cores: 0.05,
            real_knocks: 10,
            real_opened: 3,
            flood_open_p50_ms: 70.0,
            kernel_drops: 250_000,
            refused_unknown_hint: hint,
        }
    }

    #[test]
    fn one_row_per_daemon_with_the_load_and_a_missing_fwknop_said_loudly() {
        let mut r = SpaReport {
            loadavg_before: "1.00 2.00 3.00 1/100 42".into(),
            loadavg_after: "4.00 2.00 3.00 1/100 43".into(),
            rows: vec![row("knockd-rs", Some(300_000)), row("fwknopd 2.6.10", None)],
            fwknop_missing: None,
        };
        let t = table(&r);
        assert!(t.contains("before: 1.00 2.00 3.00"));
        assert!(t.contains("| knockd-rs | iptables | 1 | 50.000 (40.000–60.000, 3) |"));
        assert!(t.contains("| 0.50 s = 0.050 core | 3/10 | 70.000 ms | 250000 | 300000 |"));
        assert!(t.contains("| fwknopd 2.6.10 |") && t.contains("| 250000 | – |"));
        assert!(!t.contains("NOT MEASURED"));
        r.rows[1].flood_open_p50_ms = f64::NAN;
        assert!(table(&r).contains("| 3/10 | – | 250000 | – |"));
        r.fwknop_missing = Some("/usr/sbin/fwknopd not found".into());
        assert!(table(&r).contains("***** fwknopd NOT MEASURED: /usr/sbin/fwknopd not found"));
    }
}
