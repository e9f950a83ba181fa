//! A version's reference profile, built once at load from its reference
//! sample: for every watched feature its kind, and for a numeric feature
//! its sorted sample, quantile bin edges and bin counts, range and moments;
//! for a categorical one its categories and their counts.
//!
//! Features: the last dimension of a `[batch, F]` tensor is F features
//! (labelled `"0"`..`"F-1"`); a tensor whose rows have two or more
//! dimensions is one feature labelled with its name, its values pooled (at
//! most [`WHOLE_VALUES`] evenly spaced elements a row); an output whose rows
//! are C >= 2 scores has one more, categorical feature `class` (the argmax:
//! the class shares).
use std::collections::HashMap;

use quiver_engine::repository::model_config::{IoSpec, ModelSpec};
use quiver_runtimes::DataType;

use crate::reference::{Array, Values};
use crate::settings::{Kind, MAX_FEATURES, Settings};
use crate::stats;
use crate::values::{Category, Elements};

/// The elements a row of a whole-tensor feature contributes.
pub const WHOLE_VALUES: usize = 32;
/// The largest reference sample kept per numeric feature (for KS and
/// Wasserstein); a larger reference is thinned evenly.
pub const MAX_REFERENCE_ROWS: usize = 10_000;
/// An integer feature with at most this many distinct values in the
/// reference is taken as categorical (codes), unless settings say otherwise.
pub const CATEGORICAL_CODES: usize = 20;
/// The most categories a feature keeps (the most frequent); the others
/// count as unseen.
pub const MAX_CATEGORIES: usize = 1000;

pub struct Profile {
    /// The file it came from (or "frozen").
    pub source: String,
    pub rows: usize,
    pub tensors: Vec<TensorProfile>,
    /// Columns beyond [`MAX_FEATURES`], not watched.
    pub unwatched: usize,
    /// Features tested by a p-value each window (numeric KS, categorical
    /// chi-square): what the Bonferroni correction divides by.
    pub tests: usize,
}

pub struct TensorProfile {
    pub name: String,
    pub output: bool,
    pub layout: Layout,
    /// Elements in one row.
    pub row_len: usize,
    pub row_shape: Vec<usize>,
    pub features: Vec<FeatureProfile>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Layout {
    /// Feature `f` of row `r` is element `r * row_len + f`; with `class`,
    /// one more feature: the argmax of the row.
    Columns { class: bool },
    /// One feature: at most [`WHOLE_VALUES`] evenly spaced elements of each
    /// row (the stride follows the live row's length, which may vary).
    Whole,
}

pub struct FeatureProfile {
    pub label: String,
    pub reference: Reference,
}

pub enum Reference {
    Numeric(Numeric),
    Categorical(Categorical),
}

impl Reference {
    pub fn kind(&self) -> Kind {
        match self {
            Reference::Numeric(_) => Kind::Numeric,
            Reference::Categorical(_) => Kind::Categorical,
        }
    }
}

pub struct Numeric {
    pub sorted: Vec<f64>,
    /// Interior edges: bin `i` holds `edges[i-1] <= v < edges[i]`.
    pub edges: Vec<f64>,
    pub counts: Vec<u64>,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub std: f64,
}

impl Numeric {
    pub fn bin(&self, v: f64) -> usize {
        // The edges are sorted, so the bin is how many are <= v. Counted
        // without branches: a binary search over ten-odd edges mispredicts
        // on most values and costs several times more (benches/monitor.rs).
        if self.edges.len() <= 32 {
            self.edges.iter().map(|e| (*e <= v) as usize).sum()
        } else {
            self.edges.partition_point(|e| *e <= v)
        }
    }
}

pub struct Categorical {
    pub categories: Vec<Category>,
    index: HashMap<Category, u32>,
    pub counts: Vec<u64>,
}

impl Categorical {
    /// The category's index, `None` when the reference never had it.
    pub fn index(&self, v: &Value<'_>) -> Option<usize> {
        let key = match v {
            Value::Number(n) => Category::Code(Category::of_number(*n)?),
            Value::Text(t) => Category::Text(t.to_vec()),
        };
        self.index.get(&key).map(|&i| i as usize)
    }
}

/// One element as a feature sees it.
pub enum Value<'a> {
    Number(f64),
    Text(&'a [u8]),
}

/// Where a feature's elements come from: a reference array or a live tensor.
pub trait Cells {
    fn value(&self, i: usize) -> Option<Value<'_>>;
}

impl Cells for Array {
    fn value(&self, i: usize) -> Option<Value<'_>> {
        match &self.values {
            Values::Numbers { values, .. } => values.get(i).map(|v| Value::Number(*v)),
            Values::Strings(s) => s.get(i).map(|v| Value::Text(v)),
        }
    }
}

impl Cells for Elements<'_> {
    fn value(&self, i: usize) -> Option<Value<'_>> {
        match self {
            Elements::Numbers { .. } => self.number(i).map(Value::Number),
            Elements::Strings(_) => self.string(i).map(Value::Text),
        }
    }
}

impl TensorProfile {
    /// Rows in a tensor of this shape, `None` when its rows are not this
    /// tensor's rows (the trailing dimensions differ).
    pub fn rows_of(&self, shape: &[i64]) -> Option<usize> {
        let r = self.row_shape.len();
        let fits = |s: &[i64]| s.len() == r && s.iter().zip(&self.row_shape).all(|(&a, &b)| a >= 0 && a as usize == b);
        match self.layout {
            Layout::Whole if shape.len() == r + 1 || shape.len() == r => {
                let rows = if shape.len() == r + 1 {
                    usize::try_from(shape[0]).ok()?
                } else {
                    1
                };
                Some(rows)
            }
            _ if shape.len() == r + 1 && fits(&shape[1..]) => usize::try_from(shape[0]).ok(),
            _ if fits(shape) => Some(1),
            _ => None,
        }
    }

    /// Calls `visit(feature, value)` for every value of `rows` rows of
    /// `cells` that a feature watches. `row_len` is the live row's length
    /// (a whole tensor's rows may vary).
    pub fn visit<C: Cells + ?Sized>(
        &self,
        cells: &C,
        rows: usize,
        row_len: usize,
        mut visit: impl FnMut(usize, usize, Value<'_>),
    ) {
        match self.layout {
            Layout::Columns { class } => {
                let columns = if class {
                    self.features.len() - 1
                } else {
                    self.features.len()
                };
                for r in 0..rows {
                    let mut best: Option<(usize, f64)> = None;
                    for f in 0..columns {
                        let Some(v) = cells.value(r * row_len + f) else {
                            continue;
                        };
                        if class
                            && let Value::Number(n) = v
                            && !n.is_nan()
                            && best.is_none_or(|(_, b)| n > b)
                        {
                            best = Some((f, n));
                        }
                        visit(r, f, v);
                    }
                    if let Some((f, _)) = best {
                        visit(r, columns, Value::Number(f as f64));
                    }
                }
            }
            Layout::Whole => {
                let stride = row_len.div_ceil(WHOLE_VALUES).max(1);
                for r in 0..rows {
                    for k in (0..row_len).step_by(stride) {
                        if let Some(v) = cells.value(r * row_len + k) {
                            visit(r, 0, v);
                        }
                    }
                }
            }
        }
    }
}

/// Builds the profile of a version from its reference arrays; every array
/// must be an input or output of the model with rows that fit it.
pub fn build(
    source: String,
    arrays: &std::collections::BTreeMap<String, Array>,
    spec: &ModelSpec,
    settings: &Settings,
) -> Result<Profile, String> {
    let mut tensors = Vec::new();
    let mut budget = MAX_FEATURES;
    let mut unwatched = 0;
    let mut rows = 0;
    for name in settings.tensors.keys() {
        if !arrays.contains_key(name) {
            return Err(format!(
                "{}: names tensor '{name}', which the reference does not hold",
                crate::settings::FILE
            ));
        }
    }
    for (name, array) in arrays {
        let (io, output) = match spec.inputs.iter().find(|i| &i.name == name) {
            Some(io) => (io, false),
            None => match spec.outputs.iter().find(|o| &o.name == name) {
                Some(io) => (io, true),
                None => {
                    let names = |l: &[IoSpec]| l.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ");
                    return Err(format!(
                        "reference array '{name}' is neither an input nor an output of model '{}' (inputs: {}; outputs: {})",
                        spec.name,
                        names(&spec.inputs),
                        names(&spec.outputs)
                    ));
                }
            },
        };
        let tensor_settings = settings.tensors.get(name).cloned().unwrap_or_default();
        if settings.tensors.contains_key(name) && !tensor_settings.watch {
            continue;
        }
        check_fits(name, array, io, spec)?;
        rows = rows.max(array.rows());
        let row_shape = array.row_shape().to_vec();
        let row_len: usize = row_shape.iter().product();
        let strings = matches!(array.values, Values::Strings(_));
        let layout = if row_shape.len() <= 1 {
            let class = output
                && !strings
                && row_len >= 2
                && matches!(
                    io.datatype,
                    DataType::Fp16 | DataType::Fp32 | DataType::Fp64 | DataType::Bf16
                );
            Layout::Columns { class }
        } else {
            Layout::Whole
        };
        let columns = match layout {
            Layout::Columns { class } => row_len + class as usize,
            Layout::Whole => 1,
        };
        let mut profile = TensorProfile {
            name: name.clone(),
            output,
            layout,
            row_len,
            row_shape,
            features: Vec::new(),
        };
        // Every feature's reference values, then each one's profile.
        let mut collected: Vec<Vec<f64>> = vec![Vec::new(); columns];
        let mut texts: Vec<Vec<Category>> = vec![Vec::new(); columns];
        profile.features = (0..columns)
            .map(|_| FeatureProfile {
                label: String::new(),
                reference: Reference::Categorical(Categorical {
                    categories: Vec::new(),
                    index: HashMap::new(),
                    counts: Vec::new(),
                }),
            })
            .collect();
        profile.visit(array, array.rows(), row_len, |_, f, v| match v {
            Value::Number(n) => collected[f].push(n),
            Value::Text(t) => texts[f].push(Category::Text(t.to_vec())),
        });
        let watched = columns.min(budget);
        unwatched += columns - watched;
        budget -= watched;
        let mut features = Vec::with_capacity(watched);
        for f in 0..watched {
            let label = match layout {
                Layout::Whole => name.clone(),
                Layout::Columns { class: true } if f == columns - 1 => "class".to_owned(),
                Layout::Columns { .. } => f.to_string(),
            };
            let class_column = matches!(layout, Layout::Columns { class: true }) && f == columns - 1;
            let declared = if class_column {
                Some(Kind::Categorical)
            } else {
                tensor_settings.features.get(&f).copied().or(tensor_settings.kind)
            };
            let values = std::mem::take(&mut collected[f]);
            let reference = if strings {
                if declared == Some(Kind::Numeric) {
                    return Err(format!("reference array '{name}' holds strings: it cannot be numeric"));
                }
                categorical(std::mem::take(&mut texts[f]))
            } else {
                let integral = matches!(array.values, Values::Numbers { integral: true, .. });
                let kind = declared.unwrap_or_else(|| {
                    if integral && few_distinct(&values) {
                        Kind::Categorical
                    } else {
                        Kind::Numeric
                    }
                });
                match kind {
                    Kind::Numeric => Reference::Numeric(
                        numeric(values, settings.bins)
                            .ok_or_else(|| format!("reference array '{name}' feature '{label}' has no finite value"))?,
                    ),
                    Kind::Categorical => {
                        let codes: Option<Vec<Category>> = values
                            .iter()
                            .map(|v| Category::of_number(*v).map(Category::Code))
                            .collect();
                        categorical(codes.ok_or_else(|| {
                            format!("reference array '{name}' feature '{label}' is categorical but holds values that are not integer codes")
                        })?)
                    }
                }
            };
            features.push(FeatureProfile { label, reference });
        }
        if watched == 0 {
            continue;
        }
        // The visitor reads as many columns as there are features: when the
        // cap cut the columns, the derived `class` feature (the last) went
        // with them.
        if matches!(layout, Layout::Columns { .. }) && watched < columns {
            profile.layout = Layout::Columns { class: false };
        }
        profile.features = features;
        tensors.push(profile);
    }
    if tensors.is_empty() {
        return Err("the reference watches no tensor".into());
    }
    // Every feature gets a p-value test (KS or chi-square) every window.
    let tests = tensors.iter().map(|t| t.features.len()).sum();
    Ok(Profile {
        source,
        rows,
        tensors,
        unwatched,
        tests,
    })
}

/// What a closed window keeps of a feature for a later freeze: its sample
/// (numeric) or its counts per reference category (categorical).
pub enum Kept {
    Values(Vec<f64>),
    Counts(Vec<u64>),
}

/// A profile with `layout`'s tensors and features whose numbers come from
/// live traffic (`kept[t][f]` gathered over the frozen windows): "the last
/// hour of stable becomes the reference". A categorical feature keeps its
/// categories (values the reference never had were only counted).
pub fn frozen(layout: &Profile, kept: &[&[Vec<Kept>]], bins: usize, source: String) -> Result<Profile, String> {
    let mut tensors = Vec::new();
    let mut rows = 0u64;
    for (t, tensor) in layout.tensors.iter().enumerate() {
        let mut features = Vec::new();
        for (f, feature) in tensor.features.iter().enumerate() {
            let reference = match &feature.reference {
                Reference::Numeric(_) => {
                    let values: Vec<f64> = kept
                        .iter()
                        .flat_map(|w| match &w[t][f] {
                            Kept::Values(v) => v.as_slice(),
                            Kept::Counts(_) => &[],
                        })
                        .copied()
                        .collect();
                    rows = rows.max(values.len() as u64);
                    Reference::Numeric(numeric(values, bins).ok_or_else(|| {
                        format!(
                            "'{}' feature '{}' had no finite value in the windows",
                            tensor.name, feature.label
                        )
                    })?)
                }
                Reference::Categorical(c) => {
                    let mut counts = vec![0u64; c.counts.len()];
                    for w in kept {
                        if let Kept::Counts(k) = &w[t][f] {
                            counts.iter_mut().zip(k).for_each(|(a, b)| *a += b);
                        }
                    }
                    rows = rows.max(counts.iter().sum());
                    Reference::Categorical(Categorical {
                        categories: c.categories.clone(),
                        index: c.index.clone(),
                        counts,
                    })
                }
            };
            features.push(FeatureProfile {
                label: feature.label.clone(),
                reference,
            });
        }
        tensors.push(TensorProfile {
            name: tensor.name.clone(),
            output: tensor.output,
            layout: tensor.layout,
            row_len: tensor.row_len,
            row_shape: tensor.row_shape.clone(),
            features,
        });
    }
    Ok(Profile {
        source,
        rows: rows as usize,
        tensors,
        unwatched: layout.unwatched,
        tests: layout.tests,
    })
}

/// The reference's rows must be the model's rows: the same trailing
/// dimensions (a `-1` takes any size) and a type of the same family.
fn check_fits(name: &str, array: &Array, io: &IoSpec, spec: &ModelSpec) -> Result<(), String> {
    if array.rows() == 0 {
        return Err(format!("reference array '{name}' has no rows"));
    }
    let row = array.row_shape();
    let dims = &io.dims;
    let matches = |d: &[i64]| d.len() == row.len() && d.iter().zip(row).all(|(&a, &b)| a < 0 || a as usize == b);
    // A model without a batch dimension may still lead with one.
    let fits = matches(dims) || (spec.max_batch_size == 0 && !dims.is_empty() && matches(&dims[1..]));
    if !fits {
        return Err(format!(
            "reference array '{name}' has rows of shape {row:?}; model '{}' {} '{name}' has dims {dims:?}",
            spec.name,
            if spec.outputs.iter().any(|o| o.name == name) {
                "output"
            } else {
                "input"
            },
        ));
    }
    let strings = matches!(array.values, Values::Strings(_));
    if strings != (io.datatype == DataType::Bytes) {
        return Err(format!(
            "reference array '{name}' holds {}, the model's tensor is {}",
            if strings { "strings" } else { "numbers" },
            io.datatype.as_str()
        ));
    }
    Ok(())
}

fn few_distinct(values: &[f64]) -> bool {
    let mut seen: Vec<f64> = Vec::new();
    for v in values {
        if !seen.contains(v) {
            if seen.len() == CATEGORICAL_CODES {
                return false;
            }
            seen.push(*v);
        }
    }
    true
}

/// A numeric feature's profile; `None` when it has no finite value.
fn numeric(values: Vec<f64>, bins: usize) -> Option<Numeric> {
    let mut sorted: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    let mean = sorted.iter().sum::<f64>() / n;
    let std = (sorted.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    let mut edges: Vec<f64> = (1..bins)
        .map(|i| stats::quantile(&sorted, i as f64 / bins as f64))
        .collect();
    edges.dedup();
    let mut p = Numeric {
        edges,
        counts: Vec::new(),
        min: sorted[0],
        max: sorted[sorted.len() - 1],
        mean,
        std,
        sorted: Vec::new(),
    };
    p.counts = vec![0; p.edges.len() + 1];
    for v in &sorted {
        let bin = p.bin(*v);
        p.counts[bin] += 1;
    }
    p.sorted = thin(sorted, MAX_REFERENCE_ROWS);
    Some(p)
}

/// At most `cap` values of a sorted sample, evenly spaced (sorted still).
fn thin(sorted: Vec<f64>, cap: usize) -> Vec<f64> {
    if sorted.len() <= cap {
        return sorted;
    }
    let step = sorted.len() as f64 / cap as f64;
    (0..cap).map(|i| sorted[(i as f64 * step) as usize]).collect()
}

fn categorical(values: Vec<Category>) -> Reference {
    let mut counts: HashMap<Category, u64> = HashMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    let mut ranked: Vec<(Category, u64)> = counts.into_iter().collect();
    // The most frequent first, ties by key: the same order every load.
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.truncate(MAX_CATEGORIES);
    ranked.sort_by(|a, b| a.0.cmp(&b.0));
    Reference::Categorical(Categorical {
        index: ranked
            .iter()
            .enumerate()
            .map(|(i, (c, _))| (c.clone(), i as u32))
            .collect(),
        counts: ranked.iter().map(|(_, n)| *n).collect(),
        categories: ranked.into_iter().map(|(c, _)| c).collect(),
    })
}
