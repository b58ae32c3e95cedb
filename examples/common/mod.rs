//! What the training examples share: arguments, the volume opener, the metrics log.

use std::io::Write;
use std::path::{Path, PathBuf};

use em_connectomics::core::ChunkedVolume;
use em_connectomics::train::{Device, DeviceChoice, Event, TrainConfig};

/// `--data DIR --out DIR --preset NAME --set KEY=VALUE… --device DEVICE`
pub(crate) struct Args {
    pub data: Option<PathBuf>,
    pub out: PathBuf,
    pub set: Vec<String>,
    pub preset: Option<String>,
    pub device: DeviceChoice,
}

/// Parses the arguments; `Err` carries the message (usage for `--help`).
pub(crate) fn args(name: &str, default_out: &str) -> Result<Args, String> {
    let mut a = Args {
        data: None,
        out: PathBuf::from(default_out),
        set: Vec::new(),
        preset: None,
        device: DeviceChoice::Auto,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--data" => a.data = Some(PathBuf::from(value()?)),
            "--out" => a.out = PathBuf::from(value()?),
            "--set" => a.set.push(value()?),
            "--preset" => a.preset = Some(value()?),
            "--device" => a.device = value()?.parse().map_err(|e| format!("{e}"))?,
            "-h" | "--help" => {
                return Err(format!(
                    "usage: {name} [--data DIR] [--out DIR] [--preset NAME] [--set KEY=VALUE]… \
                     [--device auto|cpu|cuda[:N]|wgpu]"
                ))
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(a)
}

/// Opens any volume em-io reads.
pub(crate) fn opener(p: &Path) -> Result<Box<dyn ChunkedVolume>, String> {
    em_connectomics::io::open(p).map_err(|e| e.to_string())
}

/// Logs training events: every record to `metrics.jsonl`, a line on stderr every
/// `log_every` steps and for each validation; collects the losses.
pub(crate) struct Log {
    file: std::io::BufWriter<std::fs::File>,
    log_every: usize,
    steps: usize,
    /// The loss of every step.
    pub losses: Vec<f64>,
}

impl Log {
    /// Starts `DIR/metrics.jsonl`.
    pub(crate) fn new(out: &Path, cfg: &TrainConfig) -> std::io::Result<Self> {
        Ok(Self {
            file: std::io::BufWriter::new(std::fs::File::create(out.join("metrics.jsonl"))?),
            log_every: cfg.log_every,
            steps: cfg.steps,
            losses: Vec::new(),
        })
    }

    /// Records one event (always continues training).
    pub(crate) fn event(&mut self, e: Event<'_>) -> bool {
        if let Some(r) = e.record() {
            let _ = writeln!(self.file, "{r}");
        }
        match e {
            Event::Step(s) => {
                self.losses.push(s.loss);
                if s.step % self.log_every == 0 {
                    eprintln!(
                        "step {:>5}/{}  loss {:.4}  lr {:.2e}  {:.0} voxels/s  {:.0} s",
                        s.step, self.steps, s.loss, s.lr, s.voxels_per_s, s.elapsed_s
                    );
                }
            }
            Event::Validation(v) => {
                eprintln!(
                    "step {:>5}  validation {:?} ({:.0} s)",
                    v.step, v.metrics, v.seconds
                )
            }
            _ => {}
        }
        true
    }

    /// Flushes the log.
    pub(crate) fn finish(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// The device `--device` names, checked before any work (`auto`: a GPU when this build has
/// CUDA and one is visible, else the CPU); says which and why on stderr.
pub(crate) fn device(a: &Args) -> Result<Device, String> {
    let (device, why) =
        em_connectomics::train::resolve_device(a.device, &em_connectomics::autoconf::probe())
            .map_err(|e| e.to_string())?;
    eprintln!("device: {why}");
    Ok(device)
}

/// Prints the report as the last stdout line, or the error; the exit status says which.
pub(crate) fn finish(
    result: Result<serde_json::Value, Box<dyn std::error::Error>>,
) -> std::process::ExitCode {
    match result {
        Ok(report) => {
            println!("{report}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Image | ground truth | prediction at a quarter, half and three quarters of the depth,
/// as a PNG. `binary` draws the two label columns white on black (masks), otherwise one
/// colour per label. Small volumes are drawn at twice their size, large ones cropped to 512².
pub(crate) fn slices_png(
    image: &ndarray::Array3<f32>,
    [truth, prediction]: [&ndarray::Array3<u32>; 2],
    binary: bool,
    title: &str,
    path: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    use ndarray::s;
    let (nz, ny, nx) = image.dim();
    let scale = if nx <= 256 { 2 } else { 1 };
    let (w, h) = (nx.min(512) * scale, ny.min(512) * scale);
    let (gap, top) = (8, 28);
    let mut c = em_connectomics::io::png::Canvas::new(
        3 * w + 4 * gap,
        top + 3 * (h + gap + 14),
        [250, 250, 250],
    );
    c.text(gap, 6, title, [30, 30, 30], 2);
    for (row, z) in [nz / 4, nz / 2, 3 * nz / 4].into_iter().enumerate() {
        let y0 = top + row * (h + gap + 14);
        c.text(gap, y0, &format!("z {z}"), [90, 90, 90], 1);
        let y0 = y0 + 12;
        let crop = s![z, ..h / scale, ..w / scale];
        c.gray(gap, y0, image.slice(crop), 0.0, 1.0, scale);
        for (i, labels) in [truth, prediction].into_iter().enumerate() {
            let x0 = (2 + i) * gap + (1 + i) * w;
            if binary {
                let mask = labels.slice(crop).mapv(|l| f32::from(u8::from(l != 0)));
                c.gray(x0, y0, mask.view(), 0.0, 1.0, scale);
            } else {
                c.labels(x0, y0, labels.slice(crop), scale);
            }
        }
    }
    c.save_png(path)?;
    Ok(())
}
