//! Loading TOML configurations: presets by name or files by path, `key=value` overrides,
//! and the origin of the text in every error.
//!
//! Every crate that ships presets (augmentation, model, training, Slurm jobs) goes through
//! these functions, so a name, a path and an override behave the same everywhere.
//!
//! ```
//! use em_core::config::{self, Presets};
//!
//! const BUILTIN: Presets = Presets {
//!     kind: "demo",
//!     builtin: &[("small", "size = 2\n[inner]\nrate = 0.5\n")],
//! };
//! let source = BUILTIN.read("small")?;
//! let mut table = config::parse_table(&source.text, &source.origin)?;
//! config::apply_overrides(&mut table, &["inner.rate=0.25".into(), "name=run1".into()])?;
//! assert_eq!(table["inner"]["rate"].as_float(), Some(0.25));
//! assert_eq!(table["name"].as_str(), Some("run1"));
//! assert!(BUILTIN.read("large").unwrap_err().to_string().contains("small"));
//! # Ok::<(), em_core::CoreError>(())
//! ```

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::{CoreError, Result};

/// The presets a crate ships, compiled in: `(name, TOML text)`.
#[derive(Clone, Copy, Debug)]
pub struct Presets {
    /// What they configure, for messages ("augmentation", "model", "training").
    pub kind: &'static str,
    /// `(name, TOML text)` pairs.
    pub builtin: &'static [(&'static str, &'static str)],
}

/// A configuration's text and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The TOML text.
    pub text: String,
    /// `preset NAME` or the file's path.
    pub origin: String,
}

impl Presets {
    /// The text of a built-in preset.
    pub fn get(&self, name: &str) -> Option<&'static str> {
        self.builtin.iter().find(|(n, _)| *n == name).map(|p| p.1)
    }

    /// The names, comma-separated, for messages.
    pub fn names(&self) -> String {
        self.builtin
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A preset by name, else a TOML file by path.
    ///
    /// # Errors
    /// [`CoreError::UnknownPreset`] (listing the presets) when the name is neither a preset
    /// nor an existing file; [`CoreError::Config`] when the file cannot be read.
    pub fn read(&self, name_or_path: &str) -> Result<Source> {
        if let Some(text) = self.get(name_or_path) {
            return Ok(Source {
                text: text.to_string(),
                origin: format!("{} preset {name_or_path}", self.kind),
            });
        }
        let path = Path::new(name_or_path);
        if !path.exists() {
            return Err(CoreError::UnknownPreset {
                kind: self.kind,
                name: name_or_path.to_string(),
                known: self.names(),
            });
        }
        read_file(path)
    }
}

/// A configuration file's text.
///
/// # Errors
/// [`CoreError::Config`] naming the file and the I/O error.
pub fn read_file(path: &Path) -> Result<Source> {
    let origin = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Source { text, origin }),
        Err(e) => Err(CoreError::Config {
            origin,
            reason: e.to_string(),
        }),
    }
}

/// Parses TOML text into a table.
///
/// # Errors
/// [`CoreError::Config`] with the parser's message (line, column, what was expected).
pub fn parse_table(text: &str, origin: &str) -> Result<toml::Table> {
    toml::from_str(text).map_err(|e| CoreError::Config {
        origin: origin.to_string(),
        reason: e.to_string(),
    })
}

/// Deserialises a table into a typed configuration.
///
/// # Errors
/// [`CoreError::Config`] naming the unknown key or the bad value.
pub fn from_table<T: DeserializeOwned>(table: toml::Table, origin: &str) -> Result<T> {
    table
        .try_into()
        .map_err(|e: toml::de::Error| CoreError::Config {
            origin: origin.to_string(),
            reason: e.to_string(),
        })
}

/// Parses TOML text into a typed configuration.
///
/// # Errors
/// As [`parse_table`] and [`from_table`].
pub fn from_text<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| CoreError::Config {
        origin: origin.to_string(),
        reason: e.to_string(),
    })
}

/// A command-line value: TOML when it parses as a TOML value (`16`, `0.5`, `true`,
/// `[1, 2]`, `"text"`), else the bare word as a string.
pub fn parse_value(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()))
}

/// Applies `key=value` overrides in order; dotted keys reach into tables, which are
/// created when missing.
///
/// # Errors
/// [`CoreError::Config`] when an override is not `key=value`, or a dotted key goes
/// through a value that is not a table.
pub fn apply_overrides(table: &mut toml::Table, overrides: &[String]) -> Result<()> {
    for o in overrides {
        apply_override(table, o)?;
    }
    Ok(())
}

/// Applies one `key=value` override (see [`apply_overrides`]).
///
/// # Errors
/// As [`apply_overrides`].
pub fn apply_override(table: &mut toml::Table, text: &str) -> Result<()> {
    let bad = |reason: String| CoreError::Config {
        origin: format!("override {text:?}"),
        reason,
    };
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| bad("not key=value, e.g. steps=100 or model.width=16".into()))?;
    let parts: Vec<&str> = key.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(bad(format!("{key:?} is not a dotted key")));
    }
    let mut node = table;
    for p in &parts[..parts.len() - 1] {
        node = node
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .ok_or_else(|| bad(format!("{p} is not a table")))?;
    }
    node.insert(
        parts[parts.len() - 1].to_string(),
        parse_value(value.trim()),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_reach_into_tables_and_keep_types() {
        let mut t = parse_table("a = 1\n[b]\nc = \"x\"\n", "test").unwrap();
        apply_overrides(
            &mut t,
            &["a=2".into(), "b.c=y".into(), "d.e.f=[1, 2]".into()],
        )
        .unwrap();
        assert_eq!(t["a"].as_integer(), Some(2));
        assert_eq!(t["b"]["c"].as_str(), Some("y"));
        assert_eq!(t["d"]["e"]["f"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn bad_overrides_name_themselves() {
        let mut t = parse_table("a = 1\n", "test").unwrap();
        let e = apply_override(&mut t, "a.b=2").unwrap_err().to_string();
        assert!(e.contains("a.b=2") && e.contains("a is not a table"), "{e}");
        let e = apply_override(&mut t, "novalue").unwrap_err().to_string();
        assert!(e.contains("not key=value"), "{e}");
        assert!(apply_override(&mut t, "a..b=1").is_err());
    }

    #[test]
    fn unknown_presets_list_the_known_ones() {
        let p = Presets {
            kind: "test",
            builtin: &[("one", "x = 1"), ("two", "x = 2")],
        };
        assert_eq!(p.read("two").unwrap().text, "x = 2");
        let e = p.read("/no/such/three.toml").unwrap_err().to_string();
        assert!(e.contains("one, two") && e.contains("three"), "{e}");
    }

    #[test]
    fn parse_errors_name_the_origin() {
        let e = parse_table("a = ", "my.toml").unwrap_err().to_string();
        assert!(e.starts_with("my.toml: "), "{e}");
    }
}
