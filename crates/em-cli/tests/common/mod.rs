//! Helpers shared by the `em` test files (each test binary uses a different subset, hence
//! the `dead_code` allowance).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// A 3-channel affinity model config that trains 2 steps in seconds.
pub(crate) const TINY_AFFINITIES: &str = include_str!("../fixtures/tiny_affinities.toml");

/// Runs this build's `em`.
pub(crate) fn em(args: &[&str]) -> Output {
    em_with_path(args, None)
}

/// Runs `em` with `PATH` replaced (to hide Slurm's commands).
pub(crate) fn em_with_path(args: &[&str], path: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_em"));
    c.args(args);
    if let Some(p) = path {
        c.env("PATH", p);
    }
    c.output().expect("the em binary runs")
}

/// The last stdout line of a successful run as JSON (`null` if it is not JSON).
pub(crate) fn ok(o: &Output) -> serde_json::Value {
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("")).unwrap_or(serde_json::Value::Null)
}

/// A file of em-decode's reference fixtures.
pub(crate) fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../em-decode/tests/fixtures")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

/// A one-channel foreground config on a built-in synthetic volume that trains a step in a
/// fraction of a second; with `validation`, validated every 2 steps.
pub(crate) fn tiny_train_config(dir: &Path, steps: usize, validation: bool) -> PathBuf {
    let cfg = dir.join("tiny.toml");
    let validation = if validation {
        "[validation]\nevery = 2\nsource = { kind = \"synthetic\", synth = \"mito\", shape = [16, 32, 32], seed = 5 }\n"
    } else {
        ""
    };
    std::fs::write(
        &cfg,
        format!(
            r#"
steps = {steps}
batch_size = 1
workers = 1
log_every = 1
[model]
arch = "mednext_custom"
in_channels = 1
out_channels = 1
width = 4
ratios = [1, 1, 1, 1, 1, 1, 1, 1, 1]
blocks = [1, 1, 1, 1, 1, 1, 1, 1, 1]
[data]
patch = {{ patch = [16, 16, 16], epoch_len = 8 }}
[[data.sources]]
source = {{ kind = "synthetic", synth = "mito", shape = [16, 48, 48] }}
[targets]
kind = "foreground"
{validation}[checkpoint]
every = 0
"#
        ),
    )
    .unwrap();
    cfg
}

/// The steps logged in a run directory's `metrics.jsonl`, in order.
pub(crate) fn steps_logged(out: &Path) -> Vec<u64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "step")
        .filter_map(|v| v["step"].as_u64())
        .collect()
}

/// A running `em view`, killed when dropped.
pub(crate) struct ViewServer {
    pub(crate) child: std::process::Child,
    pub(crate) port: u16,
    /// The `--json` line it printed.
    pub(crate) info: serde_json::Value,
    pub(crate) stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for ViewServer {
    /// SIGTERM first, so that the server removes its temporary skeleton directory. The
    /// child is signalled only while not yet reaped, so its pid cannot belong to another
    /// process.
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `em view ARGS --json --port 0` (with `path_env` as PATH if given) and waits for
/// its JSON line.
pub(crate) fn start_view_with_path(args: &[&str], path_env: Option<&str>) -> ViewServer {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_em"));
    cmd.arg("view")
        .args(args)
        .args(["--json", "--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = path_env {
        cmd.env("PATH", p);
    }
    let mut child = cmd.spawn().expect("em runs");
    let stderr = Arc::new(Mutex::new(String::new()));
    let (err_pipe, log) = (child.stderr.take().unwrap(), stderr.clone());
    std::thread::spawn(move || {
        for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
            let mut log = log.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(120))
        .unwrap_or_default();
    let mut server = ViewServer {
        child,
        port: 0,
        info: serde_json::Value::Null,
        stderr,
    };
    let info: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| {
        std::thread::sleep(Duration::from_millis(200));
        panic!(
            "em view printed {line:?}; stderr: {}",
            server.stderr.lock().unwrap()
        )
    });
    server.port = info["port"].as_u64().unwrap() as u16;
    server.info = info;
    server
}

/// Starts `em view ARGS --json --port 0`.
pub(crate) fn start_view(args: &[&str]) -> ViewServer {
    start_view_with_path(args, None)
}
