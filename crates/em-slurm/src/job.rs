//! Typed job configs and the sbatch scripts rendered from them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Result, SlurmError};

/// One Slurm job: what runs, where, with which resources.
///
/// In TOML (`em slurm render job.toml`):
/// ```toml
/// name = "lucchi"
/// command = ["em", "train", "lucchi", "--out", "runs/{name}"]
/// modules = ["cuda/12.4"]
/// environment = { RAYON_NUM_THREADS = "8" }
///
/// [slurm]
/// partition = "gpu"
/// time = "04:00:00"
/// cpus = 8
/// memory = "32G"
/// gpus = 1
///
/// [resubmit]            # long training: checkpoint near the time limit, go on in a new job
/// signal_seconds = 300
/// max_chain = 10
/// ```
/// Command words may hold `{name}` (the job name), `{task}` (the array task id), `{job}`
/// (the job id) and `{chain}` (the link of a resubmit chain, 0 first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Job name (letters, digits, `.`, `_`, `-`, `=`); sweeps append the varying values.
    pub name: String,
    /// The program and its arguments; a first word `em` runs the `em` that renders.
    pub command: Vec<String>,
    /// Directory the job runs in (default: where it is submitted from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<PathBuf>,
    /// Environment modules to load first (`module load …`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules: Vec<String>,
    /// Shell lines run before the command (activate an environment, copy data, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub setup: Vec<String>,
    /// Environment variables of the command.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// Resources and scheduling.
    #[serde(default)]
    pub slurm: SlurmConfig,
    /// Automatic resubmission near the time limit (training chains).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resubmit: Option<Resubmit>,
}

/// `#SBATCH` options.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmConfig {
    /// `--partition`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// `--time`: minutes, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM` or `D-HH:MM:SS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    /// `--cpus-per-task`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// `--mem`: a number with an optional K, M, G or T suffix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// GPUs per node (`--gres=gpu:N`, or `gpu:TYPE:N` with `gpu_type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<u32>,
    /// GPU type for `--gres` (e.g. `a100`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_type: Option<String>,
    /// `--nodes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<u32>,
    /// `--array`, e.g. `0-9` or `0-99%10`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array: Option<String>,
    /// `--dependency` terms, e.g. `afterok:1234`; joined with `,` (all must hold).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependency: Vec<String>,
    /// `--account`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// `--qos`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    /// `--constraint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
    /// `--output` (default `slurm-%x-%j.out`, or `slurm-%x-%A_%a.out` for arrays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Other `#SBATCH` options, verbatim (e.g. `--exclusive`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<String>,
}

/// Checkpoint-and-resubmit near the time limit: Slurm signals the batch shell
/// (`--signal=B:USR1@signal_seconds`), which submits the next link with
/// `--dependency=afterany:$SLURM_JOB_ID` and passes the signal on to the command, which
/// checkpoints and exits. The next link runs the command with `resume_args` appended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resubmit {
    /// Seconds before the time limit to signal (Slurm may signal up to a minute earlier).
    #[serde(default = "default_signal_seconds")]
    pub signal_seconds: u32,
    /// Links after the first at most (a chain stops here even if the work is unfinished).
    #[serde(default = "default_max_chain")]
    pub max_chain: u32,
    /// Arguments appended to the command from the second link on.
    #[serde(default = "default_resume_args")]
    pub resume_args: Vec<String>,
}

fn default_signal_seconds() -> u32 {
    300
}

fn default_max_chain() -> u32 {
    10
}

fn default_resume_args() -> Vec<String> {
    vec!["--resume".into()]
}

impl Default for Resubmit {
    fn default() -> Self {
        Self {
            signal_seconds: default_signal_seconds(),
            max_chain: default_max_chain(),
            resume_args: default_resume_args(),
        }
    }
}

/// What a rendering needs beyond the config.
#[derive(Clone, Debug, Default)]
pub struct RenderOptions {
    /// The `em` program for a command that starts with `em` (default: `em` on PATH).
    pub em: Option<PathBuf>,
    /// Where the script will be stored; resubmission submits this file (default: the copy
    /// Slurm runs, `$0`, which exists while the job runs).
    pub script_path: Option<PathBuf>,
    /// The file the config came from, named in the script's header.
    pub source: Option<PathBuf>,
}

impl JobConfig {
    /// Reads a job config from TOML text; `origin` names it in errors.
    ///
    /// # Errors
    /// TOML syntax, unknown keys, invalid values (see [`JobConfig::validate`]).
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        let job: Self = toml::from_str(text).map_err(|e| SlurmError::Parse {
            path: origin.to_path_buf(),
            reason: e.to_string(),
        })?;
        job.validate()?;
        Ok(job)
    }

    /// Reads and checks a job config file.
    ///
    /// # Errors
    /// As [`JobConfig::from_toml`], and I/O errors.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(SlurmError::io(path))?;
        Self::from_toml(&text, path)
    }

    /// Checks every value Slurm or the shell would otherwise reject late (or misread).
    ///
    /// # Errors
    /// [`SlurmError::InvalidParameter`] naming the key.
    pub fn validate(&self) -> Result<()> {
        check_name(&self.name)?;
        if self.command.is_empty() || self.command[0].trim().is_empty() {
            return Err(SlurmError::invalid(
                "command",
                "empty; give the program and its arguments, e.g. [\"em\", \"train\", \"lucchi\"]",
            ));
        }
        for key in self.environment.keys() {
            let ok = key
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ok {
                return Err(SlurmError::invalid(
                    format!("environment.{key}"),
                    "not a shell variable name (letters, digits, _; not starting with a digit)",
                ));
            }
        }
        for m in &self.modules {
            if m.is_empty() || m.contains(char::is_whitespace) || m.contains(['\'', '"', ';']) {
                return Err(SlurmError::invalid(
                    "modules",
                    format!("{m:?} is not a module name"),
                ));
            }
        }
        let s = &self.slurm;
        if let Some(t) = &s.time {
            check_time(t)?;
        }
        if let Some(m) = &s.memory {
            let digits = m.trim_end_matches(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']);
            if digits.is_empty()
                || !digits.chars().all(|c| c.is_ascii_digit())
                || m.len() - digits.len() > 1
            {
                return Err(SlurmError::invalid(
                    "slurm.memory",
                    format!("{m:?}; a number with an optional K, M, G or T suffix, e.g. \"32G\""),
                ));
            }
        }
        for (key, v) in [("slurm.cpus", s.cpus), ("slurm.nodes", s.nodes)] {
            if v == Some(0) {
                return Err(SlurmError::invalid(key, "0; at least 1"));
            }
        }
        if s.gpu_type.is_some() && s.gpus.is_none() {
            return Err(SlurmError::invalid(
                "slurm.gpu_type",
                "set without slurm.gpus; say how many GPUs",
            ));
        }
        if let Some(a) = &s.array {
            let ok = !a.is_empty()
                && a.chars().all(|c| c.is_ascii_digit() || ",-:%".contains(c))
                && a.starts_with(|c: char| c.is_ascii_digit());
            if !ok {
                return Err(SlurmError::invalid(
                    "slurm.array",
                    format!("{a:?}; task ids like \"0-9\", \"1,3,5\" or \"0-99%10\""),
                ));
            }
            if self.resubmit.is_some() {
                return Err(SlurmError::invalid(
                    "resubmit",
                    "set on an array job; resubmission chains single jobs (run one chain per \
                     configuration, e.g. with a sweep)",
                ));
            }
        }
        for d in &s.dependency {
            let ok = d.split_once(':').is_some_and(|(kind, ids)| {
                !kind.is_empty()
                    && kind.chars().all(|c| c.is_ascii_alphabetic())
                    && !ids.is_empty()
                    && ids.chars().all(|c| c.is_ascii_digit() || ":_+".contains(c))
            }) || d == "singleton";
            if !ok {
                return Err(SlurmError::invalid(
                    "slurm.dependency",
                    format!("{d:?}; terms like \"afterok:1234\" or \"afterany:12:13\""),
                ));
            }
        }
        let words = [
            ("slurm.partition", &s.partition),
            ("slurm.account", &s.account),
            ("slurm.qos", &s.qos),
            ("slurm.constraint", &s.constraint),
            ("slurm.output", &s.output),
            ("slurm.gpu_type", &s.gpu_type),
        ];
        for (key, v) in words {
            if let Some(v) = v {
                if v.is_empty() || v.contains(char::is_whitespace) || v.contains(['\'', '"']) {
                    return Err(SlurmError::invalid(
                        key,
                        format!("{v:?}; one word, no quotes"),
                    ));
                }
            }
        }
        for e in &s.extra {
            if !e.starts_with('-') || e.contains('\n') {
                return Err(SlurmError::invalid(
                    "slurm.extra",
                    format!("{e:?}; sbatch options such as \"--exclusive\""),
                ));
            }
        }
        if let Some(r) = &self.resubmit {
            if r.signal_seconds == 0 || r.signal_seconds > 65535 {
                return Err(SlurmError::invalid(
                    "resubmit.signal_seconds",
                    format!("{}; between 1 and 65535", r.signal_seconds),
                ));
            }
        }
        for word in &self.command {
            placeholders(word)?;
        }
        Ok(())
    }

    /// The sbatch script of this job.
    ///
    /// # Errors
    /// Invalid values (see [`JobConfig::validate`]).
    pub fn render(&self, options: &RenderOptions) -> Result<String> {
        self.validate()?;
        let mut out = String::from("#!/bin/bash\n");
        let _ = writeln!(
            out,
            "# Rendered by em-slurm {}{}; submit with sbatch.",
            env!("CARGO_PKG_VERSION"),
            options
                .source
                .as_ref()
                .map(|p| format!(" from {}", p.display()))
                .unwrap_or_default()
        );
        let s = &self.slurm;
        let mut directive = |flag: &str, value: Option<String>| {
            if let Some(v) = value {
                let _ = writeln!(out, "#SBATCH --{flag}={v}");
            }
        };
        directive("job-name", Some(self.name.clone()));
        directive("partition", s.partition.clone());
        directive("time", s.time.clone());
        directive("nodes", s.nodes.map(|n| n.to_string()));
        directive("ntasks", Some("1".into()));
        directive("cpus-per-task", s.cpus.map(|n| n.to_string()));
        directive("mem", s.memory.clone());
        directive(
            "gres",
            s.gpus.map(|n| match &s.gpu_type {
                Some(t) => format!("gpu:{t}:{n}"),
                None => format!("gpu:{n}"),
            }),
        );
        directive("array", s.array.clone());
        directive(
            "dependency",
            (!s.dependency.is_empty()).then(|| s.dependency.join(",")),
        );
        directive("account", s.account.clone());
        directive("qos", s.qos.clone());
        directive("constraint", s.constraint.clone());
        let default_output = if s.array.is_some() {
            "slurm-%x-%A_%a.out"
        } else {
            "slurm-%x-%j.out"
        };
        directive(
            "output",
            Some(s.output.clone().unwrap_or_else(|| default_output.into())),
        );
        if let Some(r) = &self.resubmit {
            directive("signal", Some(format!("B:USR1@{}", r.signal_seconds)));
            // Every link of a chain appends to the same log.
            directive("open-mode", Some("append".into()));
        }
        for e in &s.extra {
            let _ = writeln!(out, "#SBATCH {e}");
        }
        out.push_str("set -uo pipefail\n");
        for m in &self.modules {
            let _ = writeln!(out, "module load {m}");
        }
        for (k, v) in &self.environment {
            let _ = writeln!(out, "export {k}={}", quote(v));
        }
        if let Some(dir) = &self.workdir {
            let _ = writeln!(out, "cd {} || exit 1", quote(&dir.display().to_string()));
        }
        for line in &self.setup {
            let _ = writeln!(out, "{line}");
        }
        out.push_str("EM_CHAIN=${EM_CHAIN:-0}\n");
        let mut words = Vec::with_capacity(self.command.len());
        for (i, w) in self.command.iter().enumerate() {
            if i == 0 && w == "em" {
                if let Some(em) = &options.em {
                    words.push(quote(&em.display().to_string()));
                    continue;
                }
            }
            words.push(self.shell_word(w)?);
        }
        let _ = writeln!(out, "cmd=({})", words.join(" "));
        let Some(r) = &self.resubmit else {
            out.push_str("exec \"${cmd[@]}\"\n");
            return Ok(out);
        };
        let script = match &options.script_path {
            Some(p) => quote(&p.display().to_string()),
            None => "\"$0\"".into(),
        };
        let resume: Vec<String> = r
            .resume_args
            .iter()
            .map(|a| self.shell_word(a))
            .collect::<Result<_>>()?;
        if !resume.is_empty() {
            let _ = writeln!(
                out,
                "if [ \"$EM_CHAIN\" -gt 0 ]; then cmd+=({}); fi",
                resume.join(" ")
            );
        }
        let max = r.max_chain;
        let _ = write!(
            out,
            r#"resubmitted=0
on_time_limit() {{
    echo "em-slurm: job $SLURM_JOB_ID is near its time limit (link $EM_CHAIN, at most {max} more)" >&2
    if [ "$resubmitted" = 0 ] && [ "$EM_CHAIN" -lt {max} ]; then
        if next=$(sbatch --parsable --dependency=afterany:"$SLURM_JOB_ID" --export=ALL,EM_CHAIN=$((EM_CHAIN + 1)) {script}); then
            resubmitted=1
            echo "em-slurm: the next link is job $next" >&2
        else
            echo "em-slurm: resubmission failed; continue by hand with the resume arguments" >&2
        fi
    elif [ "$resubmitted" = 0 ]; then
        echo "em-slurm: chain limit of {max} reached; not resubmitting" >&2
    fi
    kill -USR1 "$pid" 2>/dev/null
}}
trap on_time_limit USR1
"${{cmd[@]}}" &
pid=$!
# A trapped signal interrupts wait; wait again until the command has really ended.
while true; do
    wait "$pid"
    status=$?
    kill -0 "$pid" 2>/dev/null || break
done
exit "$status"
"#
        );
        Ok(out)
    }

    /// A command word as one shell word, with its placeholders filled in.
    fn shell_word(&self, word: &str) -> Result<String> {
        let mut out = String::new();
        for piece in placeholders(word)? {
            match piece {
                Piece::Text(t) => {
                    if !t.is_empty() {
                        out.push_str(&quote(t));
                    }
                }
                Piece::Name => out.push_str(&quote(&self.name)),
                Piece::Var(v) => {
                    let _ = write!(out, "\"${{{v}}}\"");
                }
            }
        }
        if out.is_empty() {
            out.push_str("''");
        }
        Ok(out)
    }

    /// This job with `key = value` overrides (TOML values; keys such as `slurm.time`,
    /// `name`, `resubmit.max_chain`).
    ///
    /// # Errors
    /// A malformed override, unknown key or invalid result.
    pub fn with_overrides(&self, overrides: &[String]) -> Result<Self> {
        if overrides.is_empty() {
            return Ok(self.clone());
        }
        let mut doc =
            toml::Table::try_from(self).map_err(|e| SlurmError::invalid("job", e.to_string()))?;
        for o in overrides {
            em_core::config::apply_override(&mut doc, o).map_err(|e| {
                SlurmError::invalid(
                    o.clone(),
                    format!("{e}; write KEY=VALUE, e.g. slurm.time=\"02:00:00\""),
                )
            })?;
        }
        let job: Self = doc.try_into().map_err(|e: toml::de::Error| {
            SlurmError::invalid("override", e.message().to_string())
        })?;
        job.validate()?;
        Ok(job)
    }
}

/// A TOML value, or the text itself as a string when it is not one (`name=run1`).
pub(crate) fn parse_value(text: &str) -> toml::Value {
    em_core::config::parse_value(text)
}

pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-=+".contains(c));
    if ok {
        Ok(())
    } else {
        Err(SlurmError::invalid(
            "name",
            format!("{name:?}; letters, digits and . _ - = + only (it names files and jobs)"),
        ))
    }
}

fn check_time(t: &str) -> Result<()> {
    let bad = || {
        SlurmError::invalid(
            "slurm.time",
            format!(
                "{t:?}; minutes, \"MM:SS\", \"HH:MM:SS\", \"D-HH\", \"D-HH:MM\" or \"D-HH:MM:SS\""
            ),
        )
    };
    if t.eq_ignore_ascii_case("unlimited") || t.eq_ignore_ascii_case("infinite") {
        return Ok(());
    }
    let (days, rest) = match t.split_once('-') {
        Some((d, r)) => (Some(d.parse::<u64>().map_err(|_| bad())?), r),
        None => (None, t),
    };
    let parts: Vec<u64> = rest
        .split(':')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_>>()?;
    if parts.len() > 3 || parts.iter().skip(1).any(|&p| p >= 60) {
        return Err(bad());
    }
    if days.unwrap_or(0) + parts.iter().sum::<u64>() == 0 {
        return Err(bad());
    }
    Ok(())
}

/// A word as bash reads it back: unchanged when it is plain, else single-quoted.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=+,:@%".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

enum Piece<'a> {
    Text(&'a str),
    Name,
    Var(&'static str),
}

/// Splits a command word at its placeholders.
fn placeholders(word: &str) -> Result<Vec<Piece<'_>>> {
    let mut out = Vec::new();
    let mut rest = word;
    while let Some(open) = rest.find('{') {
        out.push(Piece::Text(&rest[..open]));
        let close = rest[open..].find('}').map(|c| open + c).ok_or_else(|| {
            SlurmError::invalid("command", format!("{word:?} has an unclosed '{{'"))
        })?;
        out.push(match &rest[open + 1..close] {
            "name" => Piece::Name,
            "task" => Piece::Var("SLURM_ARRAY_TASK_ID"),
            "job" => Piece::Var("SLURM_JOB_ID"),
            "chain" => Piece::Var("EM_CHAIN"),
            other => {
                return Err(SlurmError::invalid(
                    "command",
                    format!("{word:?}: unknown placeholder {{{other}}}; use {{name}}, {{task}}, {{job}} or {{chain}}"),
                ))
            }
        });
        rest = &rest[close + 1..];
    }
    out.push(Piece::Text(rest));
    Ok(out)
}
