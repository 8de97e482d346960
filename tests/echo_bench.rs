//! The main job, `examples/echo_bench.rs`, as a new user runs it: the
//! figures it prints, `--vs`, `--plot`, and a clear error for bad flags.

mod common;

use std::process::Command;

fn echo_bench(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(common::example("echo_bench", &[]))
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Every server run reports its CPU per request and a verdict on which
/// side saturated; `--vs` adds the other servers and a summary; `--plot`
/// draws one curve per server.
#[test]
fn echo_bench_reports_cpu_saturation_and_plots_every_server() {
    let _serial = common::serial();
    let svg = std::env::temp_dir().join(format!("ringshard-echo-bench-{}.svg", std::process::id()));
    let svg_arg = svg.to_str().unwrap();
    let (ok, out, err) = echo_bench(&[
        "--conns",
        "4",
        "--duration",
        "0.3",
        "--driver",
        "epoll",
        "--vs",
        "tokio",
        "--plot",
        svg_arg,
    ]);
    assert!(ok, "{out}\n{err}");
    for server in ["ringshard-epoll:", "tokio:"] {
        let line = out.lines().find(|l| l.starts_with(server));
        assert!(line.is_some_and(|l| l.contains("req/s")), "{server}\n{out}");
    }
    assert_eq!(out.matches("server CPU ").count(), 2, "{out}");
    assert_eq!(out.matches("saturated").count(), 2, "{out}");
    assert!(out.contains("medians of 1 round(s)"), "{out}");
    assert!(!out.contains("NaN") && !out.contains("inf "), "{out}");
    let text = std::fs::read_to_string(&svg).unwrap();
    std::fs::remove_file(&svg).unwrap();
    assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
    assert_eq!(text.matches("<polyline").count(), 2);
    assert!(text.contains("ringshard-epoll (p50") && text.contains("tokio (p50"));
}

#[test]
fn echo_bench_refuses_bad_flags_without_a_panic() {
    for args in [
        &["--vs", "nginx"][..],
        &["--conns", "0"],
        &["--duration", "-1"],
        &["--duration", "0"],
        &["--addr", "127.0.0.1:1", "--vs", "tokio"],
        &["--rounds"],
    ] {
        let (ok, out, err) = echo_bench(args);
        assert!(!ok, "{args:?}: {out}");
        assert!(
            err.contains("flags:") && !err.contains("panicked"),
            "{args:?}: {err}"
        );
    }
}
