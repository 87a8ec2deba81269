//! The checkpoint file: everything a run needs to resume bit-exactly.
//!
//! Format, version 2 (version 1, the same without `schedule`, still reads), all numbers
//! little-endian:
//! ```text
//! magic        8 bytes  "MPCKPT\0\0"
//! version      u32      2
//! params       u32      count, then per parameter:
//!                name_len u32, name (UTF-8), rank u32, dims u64 x rank, offset u64
//! total        u64      elements per role buffer (padding included)
//! adam         lr, beta1, beta2, eps, weight_decay: f64; mode: u32 (0 AdamW, 1 Adam)
//! schedule     u32 kind (0 constant, 1 warmup + cosine), warmup_steps u32,
//!                decay_steps u32, min_lr f64; max_grad_norm f64 (0: no clipping)
//! step         f32      the device step count
//! scaler       u8       0 absent, 1 present, then:
//!                init_scale f32, growth f64, backoff f64, growth_interval i32,
//!                flags u8 (bit 0 enabled, bit 1 skip_nonfinite), scale f32,
//!                growth_tracker i32
//! master       f32 x total
//! m            f32 x total
//! v            f32 x total
//! ```
//! The fp16 working copy is not stored: it is the cast of the master weights, and is
//! rebuilt on load. Gradients are not stored: the next backward writes them.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::kernels::adam::{AdamConfig, AdamMode, LrSchedule};
use crate::kernels::loss_scale::ScaleRule;
use crate::nn::ArenaLayout;
use crate::optim::GradScalerConfig;

/// The version this crate writes and reads.
pub const CHECKPOINT_VERSION: u32 = 2;
const MAGIC: &[u8; 8] = b"MPCKPT\0\0";

/// The saved state of a [`GradScaler`](crate::optim::GradScaler).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScalerState {
    /// Its settings.
    pub config: GradScalerConfig,
    /// The current scale.
    pub scale: f32,
    /// Clean steps since the last growth or backoff.
    pub growth_tracker: i32,
}

/// A whole training state, on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Where each parameter lives.
    pub layout: ArenaLayout,
    /// Optimizer settings.
    pub adam: AdamConfig,
    /// Optimizer steps taken (skipped steps not counted).
    pub step: f32,
    /// fp32 master weights, `layout.total()` elements.
    pub master: Vec<f32>,
    /// First moments.
    pub m: Vec<f32>,
    /// Second moments.
    pub v: Vec<f32>,
    /// The loss scaler, if the run had one.
    pub scaler: Option<ScalerState>,
}

impl Checkpoint {
    /// Writes the file at `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        const OP: &str = "Checkpoint::save";
        let path = path.as_ref();
        let io = |source| Error::Io { op: OP, path: path.display().to_string(), source };
        let mut w = BufWriter::new(File::create(path).map_err(io)?);
        self.write_to(&mut w).map_err(io)?;
        w.flush().map_err(io)
    }

    /// Reads the file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        const OP: &str = "Checkpoint::load";
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| Error::Io { op: OP, path: path.display().to_string(), source })?;
        Self::read_from(&mut BufReader::new(file))
    }

    /// Serializes in the format above.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        w.write_all(MAGIC)?;
        w.write_all(&CHECKPOINT_VERSION.to_le_bytes())?;
        w.write_all(&(self.layout.params().len() as u32).to_le_bytes())?;
        for p in self.layout.params() {
            w.write_all(&(p.name.len() as u32).to_le_bytes())?;
            w.write_all(p.name.as_bytes())?;
            w.write_all(&(p.shape.len() as u32).to_le_bytes())?;
            for &d in &p.shape {
                w.write_all(&(d as u64).to_le_bytes())?;
            }
            w.write_all(&(p.offset as u64).to_le_bytes())?;
        }
        w.write_all(&(self.layout.total() as u64).to_le_bytes())?;
        let a = &self.adam;
        for x in [a.lr, a.beta1, a.beta2, a.eps, a.weight_decay] {
            w.write_all(&x.to_le_bytes())?;
        }
        w.write_all(&(a.mode as u32).to_le_bytes())?;
        let (kind, warmup, decay, min_lr) = match a.schedule {
            LrSchedule::Constant => (0u32, 0u32, 0u32, 0.0f64),
            LrSchedule::WarmupCosine { warmup_steps, decay_steps, min_lr } => (1, warmup_steps, decay_steps, min_lr),
        };
        for x in [kind, warmup, decay] {
            w.write_all(&x.to_le_bytes())?;
        }
        w.write_all(&min_lr.to_le_bytes())?;
        w.write_all(&a.max_grad_norm.unwrap_or(0.0).to_le_bytes())?;
        w.write_all(&self.step.to_le_bytes())?;
        match &self.scaler {
            None => w.write_all(&[0])?,
            Some(s) => {
                w.write_all(&[1])?;
                w.write_all(&s.config.init_scale.to_le_bytes())?;
                w.write_all(&s.config.rule.growth.to_le_bytes())?;
                w.write_all(&s.config.rule.backoff.to_le_bytes())?;
                w.write_all(&s.config.rule.growth_interval.to_le_bytes())?;
                w.write_all(&[s.config.enabled as u8 | (s.config.skip_nonfinite as u8) << 1])?;
                w.write_all(&s.scale.to_le_bytes())?;
                w.write_all(&s.growth_tracker.to_le_bytes())?;
            }
        }
        for buf in [&self.master, &self.m, &self.v] {
            w.write_all(bytemuck::cast_slice(&buf.iter().map(|x| x.to_bits().to_le()).collect::<Vec<u32>>()))?;
        }
        Ok(())
    }

    /// Parses the format above, checking every length against the layout.
    pub fn read_from(r: &mut impl Read) -> Result<Self> {
        const OP: &str = "Checkpoint::read";
        let bad = |why: String| Error::Checkpoint { op: OP, why };
        let mut rd = Reader { r, op: OP };
        if rd.bytes(8)? != MAGIC {
            return Err(bad("not a mixed-precision checkpoint (bad magic)".into()));
        }
        let version = rd.u32()?;
        if version != CHECKPOINT_VERSION && version != 1 {
            return Err(bad(format!("version {version}, this build reads 1 and {CHECKPOINT_VERSION}")));
        }
        let mut layout = ArenaLayout::new();
        for _ in 0..rd.u32()? {
            let name_len = rd.u32()? as usize;
            let name = String::from_utf8(rd.bytes(name_len)?).map_err(|_| bad("parameter name is not UTF-8".into()))?;
            let rank = rd.u32()? as usize;
            let shape = (0..rank).map(|_| rd.u64().map(|d| d as usize)).collect::<Result<Vec<_>>>()?;
            let offset = rd.u64()? as usize;
            let i = layout.push(&name, &shape)?;
            if layout.params()[i].offset != offset {
                return Err(bad(format!(
                    "parameter {name:?} at offset {offset}, expected {}",
                    layout.params()[i].offset
                )));
            }
        }
        let total = rd.u64()? as usize;
        if total != layout.total() {
            return Err(bad(format!("total {total} does not match the layout's {}", layout.total())));
        }
        let (lr, beta1, beta2, eps, weight_decay) = (rd.f64()?, rd.f64()?, rd.f64()?, rd.f64()?, rd.f64()?);
        let mode = match rd.u32()? {
            0 => AdamMode::AdamW,
            1 => AdamMode::Adam,
            m => return Err(bad(format!("unknown Adam mode {m}"))),
        };
        let (schedule, max_grad_norm) = if version == 1 {
            (LrSchedule::Constant, None)
        } else {
            let schedule = match (rd.u32()?, rd.u32()?, rd.u32()?, rd.f64()?) {
                (0, ..) => LrSchedule::Constant,
                (1, warmup_steps, decay_steps, min_lr) => {
                    LrSchedule::WarmupCosine { warmup_steps, decay_steps, min_lr }
                }
                (k, ..) => return Err(bad(format!("unknown lr schedule {k}"))),
            };
            let clip = rd.f64()?;
            (schedule, (clip != 0.0).then_some(clip))
        };
        let adam = AdamConfig { lr, beta1, beta2, eps, weight_decay, mode, schedule, max_grad_norm };
        adam.validate(OP)?;
        let step = f32::from_bits(rd.u32()?);
        let scaler = match rd.bytes(1)?[0] {
            0 => None,
            1 => {
                let init_scale = f32::from_bits(rd.u32()?);
                let rule = ScaleRule { growth: rd.f64()?, backoff: rd.f64()?, growth_interval: rd.u32()? as i32 };
                let flags = rd.bytes(1)?[0];
                if flags > 3 {
                    return Err(bad(format!("bad scaler flags {flags}")));
                }
                let config =
                    GradScalerConfig { init_scale, rule, enabled: flags & 1 != 0, skip_nonfinite: flags & 2 != 0 };
                config.validate(OP)?;
                Some(ScalerState { config, scale: f32::from_bits(rd.u32()?), growth_tracker: rd.u32()? as i32 })
            }
            b => return Err(bad(format!("bad scaler flag {b}"))),
        };
        let mut floats = || -> Result<Vec<f32>> {
            let raw = rd.bytes(total.checked_mul(4).ok_or_else(|| bad("total too large".into()))?)?;
            Ok(raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        };
        let (master, m, v) = (floats()?, floats()?, floats()?);
        Ok(Checkpoint { layout, adam, step, master, m, v, scaler })
    }
}

struct Reader<'a, R> {
    r: &'a mut R,
    op: &'static str,
}

impl<R: Read> Reader<'_, R> {
    fn bytes(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        let got = self
            .r
            .by_ref()
            .take(n as u64)
            .read_to_end(&mut buf)
            .map_err(|e| Error::Checkpoint { op: self.op, why: e.to_string() })?;
        if got != n {
            return Err(Error::Checkpoint { op: self.op, why: "file ends early (truncated checkpoint)".into() });
        }
        Ok(buf)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().expect("8 bytes")))
    }
    fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_bits(self.u64()?))
    }
}
