//! Weights in and out as safetensors (the format `safetensors.torch.save_file` /
//! `load_file` write and read): the fp32 master weights by parameter name, each tensor
//! row-major with its shape, so `model.load_state_dict(safetensors.torch.load_file(p))`
//! loads what a run trained, and a run can start from weights PyTorch saved.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::error::{Error, Result};
use crate::nn::ArenaLayout;

fn io_error(op: &'static str, path: &Path, source: std::io::Error) -> Error {
    Error::Io { op, path: path.display().to_string(), source }
}

fn format_error(op: &'static str, why: String) -> Error {
    Error::Checkpoint { op, why }
}

/// Writes the parameters of `layout` from the flat arena `master` (f32, padding
/// included) to `path`, one F32 tensor per parameter under its name.
pub fn save_safetensors(path: impl AsRef<Path>, layout: &ArenaLayout, master: &[f32]) -> Result<()> {
    const OP: &str = "save_safetensors";
    let path = path.as_ref();
    if master.len() != layout.total() {
        return Err(Error::LengthMismatch { op: OP, what: "master", expected: layout.total(), got: master.len() });
    }
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = layout
        .params()
        .iter()
        .map(|p| {
            let values = &master[p.offset..p.offset + p.len];
            let raw = values.iter().flat_map(|x| x.to_le_bytes()).collect();
            (p.name.clone(), raw, p.shape.clone())
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, raw, shape)| {
            TensorView::new(Dtype::F32, shape.clone(), raw)
                .map(|v| (name.clone(), v))
                .map_err(|e| format_error(OP, format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let data = safetensors::serialize(views, None).map_err(|e| format_error(OP, e.to_string()))?;
    std::fs::write(path, data).map_err(|e| io_error(OP, path, e))
}

/// Reads `path` into a flat arena of `layout` (f32, zero padding): every parameter must
/// be there under its name with its shape, as F32 (or F16, BF16, F64: widened or
/// rounded to f32 as PyTorch's `.float()` does), and nothing else may be; any mismatch is
/// an error naming the tensor.
pub fn load_safetensors(path: impl AsRef<Path>, layout: &ArenaLayout) -> Result<Vec<f32>> {
    const OP: &str = "load_safetensors";
    let path = path.as_ref();
    let data = std::fs::read(path).map_err(|e| io_error(OP, path, e))?;
    let file = SafeTensors::deserialize(&data).map_err(|e| format_error(OP, format!("{}: {e}", path.display())))?;
    let mut flat = vec![0.0f32; layout.total()];
    let mut expected: BTreeMap<&str, _> = layout.params().iter().map(|p| (p.name.as_str(), p)).collect();
    for (name, view) in file.tensors() {
        let Some(p) = expected.remove(name.as_str()) else {
            return Err(format_error(
                OP,
                format!("{}: tensor {name:?} is not a parameter of the model", path.display()),
            ));
        };
        if view.shape() != p.shape.as_slice() {
            return Err(format_error(
                OP,
                format!("{}: {name}: shape {:?}, the model's is {:?}", path.display(), view.shape(), p.shape),
            ));
        }
        let raw = view.data();
        let dst = &mut flat[p.offset..p.offset + p.len];
        match view.dtype() {
            Dtype::F32 => dst
                .iter_mut()
                .zip(raw.chunks_exact(4))
                .for_each(|(d, c)| *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            Dtype::F16 => dst
                .iter_mut()
                .zip(raw.chunks_exact(2))
                .for_each(|(d, c)| *d = half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
            Dtype::BF16 => dst
                .iter_mut()
                .zip(raw.chunks_exact(2))
                .for_each(|(d, c)| *d = half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
            Dtype::F64 => dst
                .iter_mut()
                .zip(raw.chunks_exact(8))
                .for_each(|(d, c)| *d = f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32),
            other => {
                return Err(format_error(
                    OP,
                    format!("{}: {name}: dtype {other:?} is not a float type", path.display()),
                ))
            }
        }
    }
    if let Some(missing) = expected.keys().next() {
        return Err(format_error(OP, format!("{}: parameter {missing:?} is missing", path.display())));
    }
    Ok(flat)
}
