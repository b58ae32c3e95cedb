//! waterz's scoring functions, parsed from their C++ type strings and evaluated with the
//! same statistics, the same arithmetic types and the same update order.

use std::fmt;

use crate::{DecodeError, Result};

/// An edge scoring function: waterz's C++ type string, or a short alias.
///
/// Supported (waterz's spelling; `RegionGraphType` and `ScoreValue` as in waterz):
/// `MeanAffinity<RegionGraphType, ScoreValue>`, `MinAffinity<…>`, `MaxAffinity<…>`,
/// `HistogramQuantileAffinity<RegionGraphType, Q, ScoreValue, Bins[, InitWithMax]>`,
/// `QuantileAffinity<RegionGraphType, Q, ScoreValue[, InitWithMax]>`,
/// `MeanMaxKAffinity<RegionGraphType, K, ScoreValue>`, `MinSize<RegionGraphType>`,
/// `MaxSize<…>`, `ContactArea<…>`, `Constant<RegionGraphType, C>`, and the operators
/// `OneMinus`, `Invert`, `Square`, `Add`, `Subtract`, `Multiply`, `Divide`, `Step`.
/// Aliases: `mean` (waterz's default, `OneMinus<MeanAffinity<…>>`), `histQ` / PyTC's
/// `affQ_hisB` (`OneMinus<HistogramQuantileAffinity<…, Q, …, 256 or B>>`), `histQ_nomax`
/// (the same with `InitWithMax` false), `quantileQ` / `affQ_his0` (exact quantile),
/// `maxK` (`OneMinus<MeanMaxKAffinity<…, K, …>>`), `min`, `max`.
#[derive(Clone, Debug, PartialEq)]
pub struct Scoring {
    expr: Expr,
    /// Statistics providers in waterz's inheritance order (it decides which are told of
    /// an edge merge: the first that reports a change stops the notification).
    providers: Vec<Provider>,
    text: String,
}

/// A statistic waterz keeps per edge or per region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Provider {
    Mean,
    Min,
    Max,
    Size,
    Contact,
    Histogram {
        q: u32,
        bins: u32,
        init_max: bool,
    },
    Quantile {
        q: u32,
        init_max: bool,
    },
    MaxK {
        k: u32,
    },
    /// Stateless; in the chain only because its place can move the others.
    Constant(i32),
}

/// The C++ arithmetic type of a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    F32,
    F64,
    Size,
    Int,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unary {
    OneMinus,
    Invert,
    Square,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Binary {
    Add,
    Subtract,
    Multiply,
    Divide,
    Step,
}

/// A provider while parsing, its index in the final chain afterwards.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Slot {
    Of(Provider),
    At(usize),
}

impl Slot {
    fn index(self) -> usize {
        match self {
            Slot::At(i) => i,
            Slot::Of(_) => unreachable!("provider slots are resolved after parsing"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Expr {
    /// An edge statistic (index into the providers once resolved).
    Edge(Slot),
    MinSize(Slot),
    MaxSize(Slot),
    Constant(i32),
    Unary(Unary, Ty, Box<Expr>),
    Binary(Binary, Ty, Box<Expr>, Box<Expr>),
}

/// A value in its C++ type.
#[derive(Clone, Copy, Debug)]
enum Num {
    F32(f32),
    F64(f64),
    Size(u64),
    Int(i32),
}

impl Num {
    fn f64(self) -> f64 {
        match self {
            Num::F32(v) => f64::from(v),
            Num::F64(v) => v,
            Num::Size(v) => v as f64,
            Num::Int(v) => f64::from(v),
        }
    }
    fn f32(self) -> f32 {
        match self {
            Num::F32(v) => v,
            Num::F64(v) => v as f32,
            Num::Size(v) => v as f32,
            Num::Int(v) => v as f32,
        }
    }
}

/// What the scores are computed from: per-edge statistics and region sizes.
pub(crate) trait Stats {
    /// The value of provider `p` for edge `e` (affinity statistics and contact areas).
    fn edge_value(&self, p: usize, e: usize) -> Num32;
    /// The size of region `n` (provider `p`).
    fn size(&self, p: usize, n: usize) -> u64;
    /// The ends of edge `e`.
    fn ends(&self, e: usize) -> (usize, usize);
}

/// An edge statistic: an affinity statistic (float) or a count (contact area).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Num32 {
    Float(f32),
    Count(u64),
}

impl Scoring {
    /// Parses a waterz scoring string or an alias.
    pub fn parse(text: &str) -> Result<Self> {
        let expanded = expand_alias(text.trim()).unwrap_or_else(|| text.trim().to_string());
        let tokens = tokenize(&expanded).map_err(|reason| bad(text, &reason))?;
        let mut parser = Parser { tokens, pos: 0 };
        let (mut expr, _, providers) = parser.function().map_err(|reason| bad(text, &reason))?;
        if parser.pos != parser.tokens.len() {
            return Err(bad(text, "unexpected text after the scoring function"));
        }
        resolve(&mut expr, &providers);
        Ok(Scoring {
            expr,
            providers,
            text: text.trim().to_string(),
        })
    }

    /// The statistics this function needs, in waterz's order.
    pub(crate) fn providers(&self) -> &[Provider] {
        &self.providers
    }

    /// The score of edge `e`, rounded to `float` as waterz stores it.
    pub(crate) fn score(&self, stats: &impl Stats, e: usize) -> f32 {
        eval(&self.expr, stats, e).f32()
    }
}

impl fmt::Display for Scoring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Scoring {
    type Err = DecodeError;
    fn from_str(s: &str) -> Result<Self> {
        Scoring::parse(s)
    }
}

impl Default for Scoring {
    /// waterz's default, `OneMinus<MeanAffinity<RegionGraphType, ScoreValue>>`.
    fn default() -> Self {
        Scoring::parse("mean").expect("the default scoring parses")
    }
}

impl serde::Serialize for Scoring {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for Scoring {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Scoring::parse(&text).map_err(serde::de::Error::custom)
    }
}

const SUPPORTED: &str = "supported: mean, histQ (e.g. hist50), histQ_nomax, affQ_hisB (PyTC, \
e.g. aff50_his256), quantileQ, maxK, min, max, or a waterz type string built from \
MeanAffinity, MinAffinity, MaxAffinity, HistogramQuantileAffinity, QuantileAffinity, \
MeanMaxKAffinity, MinSize, MaxSize, ContactArea, Constant and the operators OneMinus, \
Invert, Square, Add, Subtract, Multiply, Divide, Step";

/// The statistics waterz's scoring strings may name (`Random` only to be refused clearly).
const STATISTICS: [&str; 11] = [
    "MeanAffinity",
    "MinAffinity",
    "MaxAffinity",
    "HistogramQuantileAffinity",
    "QuantileAffinity",
    "MeanMaxKAffinity",
    "MinSize",
    "MaxSize",
    "ContactArea",
    "Constant",
    "Random",
];

fn bad(text: &str, reason: &str) -> DecodeError {
    DecodeError::InvalidParameter {
        name: "scoring",
        reason: format!("{text:?}: {reason}; {SUPPORTED}"),
    }
}

fn expand_alias(s: &str) -> Option<String> {
    let one_minus = |inner: String| format!("OneMinus<{inner}>");
    let number = |rest: &str| rest.parse::<u32>().ok();
    match s {
        "mean" => return Some(one_minus("MeanAffinity<RegionGraphType,ScoreValue>".into())),
        "min" => return Some(one_minus("MinAffinity<RegionGraphType,ScoreValue>".into())),
        "max" => return Some(one_minus("MaxAffinity<RegionGraphType,ScoreValue>".into())),
        _ => {}
    }
    if let Some(rest) = s.strip_prefix("hist") {
        let (q, init) = match rest.strip_suffix("_nomax") {
            Some(q) => (q, "false"),
            None => (rest, "true"),
        };
        let q = number(q)?;
        return Some(one_minus(format!(
            "HistogramQuantileAffinity<RegionGraphType,{q},ScoreValue,256,{init}>"
        )));
    }
    if let Some(q) = s.strip_prefix("quantile").and_then(number) {
        return Some(one_minus(format!(
            "QuantileAffinity<RegionGraphType,{q},ScoreValue>"
        )));
    }
    if let Some(k) = s.strip_prefix("max").and_then(number) {
        return Some(one_minus(format!(
            "MeanMaxKAffinity<RegionGraphType,{k},ScoreValue>"
        )));
    }
    // PyTC's names: aff<Q>_his<Bins>, his0 meaning the exact quantile.
    let rest = s.strip_prefix("aff")?;
    let (q, bins) = rest.split_once("_his")?;
    let (q, bins) = (number(q)?, number(bins)?);
    Some(if bins == 0 {
        one_minus(format!("QuantileAffinity<RegionGraphType,{q},ScoreValue>"))
    } else {
        one_minus(format!(
            "HistogramQuantileAffinity<RegionGraphType,{q},ScoreValue,{bins}>"
        ))
    })
}

fn tokenize(s: &str) -> std::result::Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    for c in s.chars() {
        if c.is_alphanumeric() || c == '_' || c == '-' {
            word.push(c);
            continue;
        }
        if !word.is_empty() {
            tokens.push(std::mem::take(&mut word));
        }
        match c {
            '<' | '>' | ',' => tokens.push(c.to_string()),
            c if c.is_whitespace() => {}
            _ => return Err(format!("unexpected character {c:?}")),
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<String>,
    pos: usize,
}

/// waterz's `MergeProviders`: the providers of two operands as one inheritance chain.
/// Equal single providers collapse; a provider joins the end of a chain unless already in
/// it; a single provider *before* a chain still goes to the chain's end.
fn merge_providers(a: Vec<Provider>, b: Vec<Provider>) -> Vec<Provider> {
    let (mut chain, extra) = if a.len() == 1 && b.len() > 1 {
        (b, a)
    } else {
        (a, b)
    };
    for p in extra {
        if !chain.contains(&p) {
            chain.push(p);
        }
    }
    chain
}

fn resolve(expr: &mut Expr, providers: &[Provider]) {
    let at = |slot: &mut Slot| {
        if let Slot::Of(p) = *slot {
            *slot = Slot::At(
                providers
                    .iter()
                    .position(|&q| q == p)
                    .expect("in the chain"),
            );
        }
    };
    match expr {
        Expr::Edge(s) | Expr::MinSize(s) | Expr::MaxSize(s) => at(s),
        Expr::Constant(_) => {}
        Expr::Unary(_, _, inner) => resolve(inner, providers),
        Expr::Binary(_, _, a, b) => {
            resolve(a, providers);
            resolve(b, providers);
        }
    }
}

type Parsed<T> = std::result::Result<T, String>;

impl Parser {
    fn next(&mut self) -> Parsed<String> {
        let t = self
            .tokens
            .get(self.pos)
            .cloned()
            .ok_or("the string ends too early")?;
        self.pos += 1;
        Ok(t)
    }
    fn expect(&mut self, want: &str) -> Parsed<()> {
        let t = self.next()?;
        if t == want {
            Ok(())
        } else {
            Err(format!("expected {want:?}, found {t:?}"))
        }
    }
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.pos).map(String::as_str)
    }
    fn word(&mut self, want: &str) -> Parsed<()> {
        self.expect(",")?;
        self.expect(want)
    }
    fn int(&mut self, what: &str) -> Parsed<i64> {
        self.expect(",")?;
        let t = self.next()?;
        t.parse()
            .map_err(|_| format!("{what} must be a whole number, found {t:?}"))
    }
    fn flag(&mut self, default: bool) -> Parsed<bool> {
        if self.peek() != Some(",") {
            return Ok(default);
        }
        self.expect(",")?;
        match self.next()?.as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            t => Err(format!("expected true or false, found {t:?}")),
        }
    }
    fn quantile(&mut self) -> Parsed<u32> {
        let q = self.int("the quantile")?;
        if !(0..=100).contains(&q) {
            return Err(format!("the quantile must be within 0..=100, found {q}"));
        }
        Ok(q as u32)
    }

    /// One scoring function, its C++ score type and its providers.
    fn function(&mut self) -> Parsed<(Expr, Ty, Vec<Provider>)> {
        let name = self.next()?;
        self.expect("<")?;
        let out = match name.as_str() {
            "OneMinus" | "Invert" | "Square" => {
                let (inner, ty, providers) = self.function()?;
                let op = match name.as_str() {
                    "OneMinus" => Unary::OneMinus,
                    "Invert" => Unary::Invert,
                    _ => Unary::Square,
                };
                let ty = operator_type(ty, ty);
                (Expr::Unary(op, ty, Box::new(inner)), ty, providers)
            }
            "Add" | "Subtract" | "Multiply" | "Divide" | "Step" => {
                let (a, ta, pa) = self.function()?;
                self.expect(",")?;
                let (b, tb, pb) = self.function()?;
                let op = match name.as_str() {
                    "Add" => Binary::Add,
                    "Subtract" => Binary::Subtract,
                    "Multiply" => Binary::Multiply,
                    "Divide" => Binary::Divide,
                    _ => Binary::Step,
                };
                let ty = operator_type(ta, tb);
                let providers = merge_providers(pa, pb);
                (
                    Expr::Binary(op, ty, Box::new(a), Box::new(b)),
                    ty,
                    providers,
                )
            }
            _ => {
                if !STATISTICS.contains(&name.as_str()) {
                    return Err(format!("unknown scoring function {name:?}"));
                }
                self.expect("RegionGraphType")?;
                self.statistic(&name)?
            }
        };
        self.expect(">")?;
        Ok(out)
    }

    fn statistic(&mut self, name: &str) -> Parsed<(Expr, Ty, Vec<Provider>)> {
        let float = |_: &mut Self, p: Provider| (Expr::Edge(Slot::Of(p)), Ty::F32, vec![p]);
        let size = Slot::Of(Provider::Size);
        Ok(match name {
            "MeanAffinity" | "MinAffinity" | "MaxAffinity" => {
                self.word("ScoreValue")?;
                let p = match name {
                    "MeanAffinity" => Provider::Mean,
                    "MinAffinity" => Provider::Min,
                    _ => Provider::Max,
                };
                float(self, p)
            }
            "HistogramQuantileAffinity" => {
                let q = self.quantile()?;
                self.word("ScoreValue")?;
                let bins = self.int("the number of bins")?;
                if !(1..=65536).contains(&bins) {
                    return Err(format!("the bins must be within 1..=65536, found {bins}"));
                }
                let init_max = self.flag(true)?;
                let p = Provider::Histogram {
                    q,
                    bins: bins as u32,
                    init_max,
                };
                float(self, p)
            }
            "QuantileAffinity" => {
                let q = self.quantile()?;
                self.word("ScoreValue")?;
                let init_max = self.flag(true)?;
                float(self, Provider::Quantile { q, init_max })
            }
            "MeanMaxKAffinity" => {
                let k = self.int("K")?;
                if !(1..=64).contains(&k) {
                    return Err(format!("K must be within 1..=64, found {k}"));
                }
                self.word("ScoreValue")?;
                float(self, Provider::MaxK { k: k as u32 })
            }
            "MinSize" => (Expr::MinSize(size), Ty::Size, vec![Provider::Size]),
            "MaxSize" => (Expr::MaxSize(size), Ty::Size, vec![Provider::Size]),
            "ContactArea" => (
                Expr::Edge(Slot::Of(Provider::Contact)),
                Ty::Size,
                vec![Provider::Contact],
            ),
            "Constant" => {
                let c = self.int("the constant")?;
                let c = i32::try_from(c).map_err(|_| format!("{c} does not fit an int"))?;
                (Expr::Constant(c), Ty::Int, vec![Provider::Constant(c)])
            }
            "Random" => {
                return Err(
                    "Random is not supported: waterz draws it from the C library's \
                            unseeded rand(), so no result could be reproduced"
                        .into(),
                )
            }
            other => return Err(format!("unknown scoring function {other:?}")),
        })
    }
}

/// C++'s type for an operator on `a` and `b`: their common type, or double when that is
/// a whole-number type (waterz's `OperatorScoreType`).
fn operator_type(a: Ty, b: Ty) -> Ty {
    use Ty::*;
    match (a, b) {
        (F64, _) | (_, F64) => F64,
        (F32, _) | (_, F32) => F32,
        _ => F64,
    }
}

fn eval(expr: &Expr, stats: &impl Stats, e: usize) -> Num {
    match *expr {
        Expr::Edge(p) => match stats.edge_value(p.index(), e) {
            Num32::Float(v) => Num::F32(v),
            Num32::Count(v) => Num::Size(v),
        },
        Expr::MinSize(p) => {
            let (u, v) = stats.ends(e);
            Num::Size(stats.size(p.index(), u).min(stats.size(p.index(), v)))
        }
        Expr::MaxSize(p) => {
            let (u, v) = stats.ends(e);
            Num::Size(stats.size(p.index(), u).max(stats.size(p.index(), v)))
        }
        Expr::Constant(c) => Num::Int(c),
        Expr::Unary(op, ty, ref inner) => {
            let x = eval(inner, stats, e);
            match ty {
                Ty::F32 => {
                    let x = x.f32();
                    Num::F32(match op {
                        // `1.0 - x` and `1.0 / x` are double expressions in C++.
                        Unary::OneMinus => (1.0 - f64::from(x)) as f32,
                        Unary::Invert => (1.0 / f64::from(x)) as f32,
                        Unary::Square => x * x,
                    })
                }
                _ => {
                    let x = x.f64();
                    Num::F64(match op {
                        Unary::OneMinus => 1.0 - x,
                        Unary::Invert => 1.0 / x,
                        Unary::Square => x * x,
                    })
                }
            }
        }
        Expr::Binary(op, ty, ref a, ref b) => {
            let (a, b) = (eval(a, stats, e), eval(b, stats, e));
            match ty {
                Ty::F32 => Num::F32(binary_f32(op, a.f32(), b.f32())),
                _ => Num::F64(binary_f64(op, a.f64(), b.f64())),
            }
        }
    }
}

macro_rules! binary_impl {
    ($name:ident, $t:ty) => {
        fn $name(op: Binary, a: $t, b: $t) -> $t {
            match op {
                Binary::Add => a + b,
                Binary::Subtract => a - b,
                Binary::Multiply => a * b,
                // waterz's save_divide: ±the largest value instead of a division by ~0.
                Binary::Divide => {
                    if b.abs() <= <$t>::MIN_POSITIVE {
                        if (a * b).is_sign_negative() {
                            <$t>::MIN
                        } else {
                            <$t>::MAX
                        }
                    } else {
                        a / b
                    }
                }
                Binary::Step => {
                    if a < b {
                        0.0
                    } else {
                        1.0
                    }
                }
            }
        }
    };
}
binary_impl!(binary_f32, f32);
binary_impl!(binary_f64, f64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_expand_to_waterz_strings() {
        let a = Scoring::parse("aff50_his256").unwrap();
        let b = Scoring::parse(
            "OneMinus<HistogramQuantileAffinity<RegionGraphType, 50, ScoreValue, 256>>",
        )
        .unwrap();
        assert_eq!(a.expr, b.expr);
        assert_eq!(a.providers, b.providers);
        assert_eq!(Scoring::parse("hist50").unwrap().providers, b.providers);
    }

    #[test]
    fn operator_types_follow_cpp() {
        let s = Scoring::parse(
            "Divide<Subtract<MaxSize<RegionGraphType>,MinSize<RegionGraphType>>,\
             Add<MaxSize<RegionGraphType>,MinSize<RegionGraphType>>>",
        )
        .unwrap();
        assert_eq!(s.providers, vec![Provider::Size]);
        assert!(matches!(
            s.expr,
            Expr::Binary(Binary::Divide, Ty::F64, _, _)
        ));
    }

    #[test]
    fn unknown_strings_list_what_is_supported() {
        for bad in [
            "Median<RegionGraphType>",
            "mean2",
            "OneMinus<MeanAffinity<RegionGraphType>>",
            "Random<RegionGraphType>",
            "hist101",
        ] {
            let e = Scoring::parse(bad).unwrap_err().to_string();
            assert!(e.contains("supported: mean"), "{bad}: {e}");
        }
    }
}
