//! The digits data set (examples/data/digits.csv.gz, see examples/data/README.md): 1,797
//! 8x8 images of handwritten digits, pixel counts 0..16, labels 0..9. Shared by the
//! training example, its tests and the training-step benchmark.
#![allow(dead_code)] // each user takes what it needs

use std::io::Read;
use std::path::{Path, PathBuf};

use mixed_precision::rng::Rng;

/// Pixels per image.
pub const FEATURES: usize = 64;
/// Digit classes.
pub const CLASSES: usize = 10;

/// Images scaled to [0, 1] (divided by 16), row-major, and their labels.
#[derive(Clone, Debug, Default)]
pub struct Digits {
    /// `len() x FEATURES` values.
    pub x: Vec<f32>,
    /// One label per image.
    pub y: Vec<u32>,
}

impl Digits {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// The images at `rows`, in that order.
    pub fn gather(&self, rows: &[usize]) -> Digits {
        let mut out = Digits { x: Vec::with_capacity(rows.len() * FEATURES), y: Vec::with_capacity(rows.len()) };
        for &r in rows {
            out.x.extend_from_slice(&self.x[r * FEATURES..(r + 1) * FEATURES]);
            out.y.push(self.y[r]);
        }
        out
    }

    /// A seeded shuffle split: `test_fraction` of the images for testing, the rest for
    /// training. The same seed gives the same split everywhere.
    pub fn split(&self, test_fraction: f64, seed: u64) -> (Digits, Digits) {
        let order = permutation(self.len(), &mut Rng::new(seed));
        let n_test = (self.len() as f64 * test_fraction).round() as usize;
        (self.gather(&order[n_test..]), self.gather(&order[..n_test]))
    }
}

/// A uniformly random permutation of 0..n (Fisher-Yates).
pub fn permutation(n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        p.swap(i, j);
    }
    p
}

/// The file: `$MIXED_PRECISION_DIGITS` if set; else the project's copy where it was
/// built; else `examples/data/digits.csv.gz` under the working directory (executables
/// copied to another machine, such as the GPU bundle, run from the repository root).
pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os("MIXED_PRECISION_DIGITS") {
        return PathBuf::from(p);
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data/digits.csv.gz");
    if built.exists() {
        built
    } else {
        PathBuf::from("examples/data/digits.csv.gz")
    }
}

/// Reads and checks the data set.
pub fn load(path: &Path) -> Result<Digits, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file).read_to_string(&mut text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut d = Digits::default();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != FEATURES + 1 {
            return Err(format!(
                "{}: line {}: {} fields, expected {}",
                path.display(),
                i + 1,
                fields.len(),
                FEATURES + 1
            ));
        }
        for f in &fields[..FEATURES] {
            let v: f32 = f.parse().map_err(|e| format!("{}: line {}: {f:?}: {e}", path.display(), i + 1))?;
            d.x.push(v / 16.0);
        }
        let label: f32 =
            fields[FEATURES].parse().map_err(|e| format!("{}: line {}: label: {e}", path.display(), i + 1))?;
        if !(0.0..CLASSES as f32).contains(&label) || label.fract() != 0.0 {
            return Err(format!("{}: line {}: label {label} is not a digit", path.display(), i + 1));
        }
        d.y.push(label as u32);
    }
    Ok(d)
}

/// The settings of a digits run; the defaults are the README's main job.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunConfig {
    /// Optimizer steps.
    pub steps: usize,
    /// Images per step.
    pub batch: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// Seeds the split, the initial weights and the batch order.
    pub seed: u64,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig { steps: 600, batch: 64, lr: 3e-3, seed: 0 }
    }
}

/// Fraction of the images held out for testing.
pub const TEST_FRACTION: f64 = 0.2;
/// The model: 64 pixels, two hidden layers of 128, 10 classes.
pub const WIDTHS: [usize; 4] = [FEATURES, 128, 128, CLASSES];

/// Trains the digits Mlp (ReLU) on `train` with `be` and returns the step with its
/// weights; `on_step(step, loss, loss_scale)` sees every step (reading the loss waits for
/// the step to finish). The initial weights and batches depend only on `cfg`, so two
/// backends given the same `cfg` train from the same start on the same batches.
pub fn train<B: mixed_precision::backend::Backend>(
    be: B,
    train: &Digits,
    cfg: &RunConfig,
    tcfg: mixed_precision::TrainConfig,
    mut on_step: impl FnMut(usize, f32, f32),
) -> mixed_precision::Result<mixed_precision::TrainStep<B>> {
    use mixed_precision::kernels::gemm::Activation;
    use mixed_precision::nn::Mlp;
    let model = Mlp::new(&WIDTHS, Activation::Relu)?;
    let init = model.init(cfg.seed);
    let tcfg =
        mixed_precision::TrainConfig { adam: mixed_precision::optim::AdamConfig { lr: cfg.lr, ..tcfg.adam }, ..tcfg };
    let mut step = mixed_precision::TrainStep::new(be, model, &init, tcfg)?;
    let mut rng = Rng::new(cfg.seed ^ 0x5eed_ba7c);
    let batch = cfg.batch.min(train.len()).max(1);
    let mut order = Vec::new();
    let mut next = 0;
    for s in 0..cfg.steps {
        if next + batch > order.len() {
            order = permutation(train.len(), &mut rng);
            next = 0;
        }
        let b = train.gather(&order[next..next + batch]);
        next += batch;
        step.step(&b.x, &b.y)?;
        on_step(s, step.loss()?, step.loss_scale()?);
    }
    Ok(step)
}
