//! Bench `gpt_cpu`: the CPU fp32 GPT training step (`TrainStep<Cpu, Gpt>` on
//! `Cpu::fp32()`: forward, fused classifier, backward, AdamW) per model shape, timed on
//! the host clock (no GPU here): warm-up steps first, then the median of timed steps, on
//! random tokens. PyTorch's eager CPU step on the same model, weights and batch is the
//! baseline, measured in the same run by `bench/cpu_gpt/run.sh`, which calls this with a
//! folder: each case writes its initial weights (safetensors, by nanoGPT's names), its
//! batch and its settings there for the Python side, and prints one line
//! `gpt_cpu <case> median_s <t> tokens_per_s <r> first_loss <l>`.
//!
//!     cargo bench --bench gpt_cpu -- [DIR [CASE]]     (CASE: run only the case of that name)

use std::time::Instant;

use mixed_precision::backend::cpu::Cpu;
use mixed_precision::nn::{Gpt, GptConfig};
use mixed_precision::rng::Rng;
use mixed_precision::{TrainConfig, TrainStep};

const WARMUP: usize = 3;
const RUNS: usize = 15;

struct Case {
    name: &'static str,
    cfg: GptConfig,
    batch: usize,
}

fn cases() -> Vec<Case> {
    let shakespeare = GptConfig { vocab: 65, padded_vocab: 80, context: 64, layers: 2, heads: 4, width: 64 };
    vec![
        // The main job's default model and batch (examples/train_shakespeare.rs).
        Case { name: "shakespeare_default", cfg: shakespeare, batch: 16 },
        // Wider and deeper, GEMM-heavier.
        Case {
            name: "l4_c256_t128",
            cfg: GptConfig { context: 128, layers: 4, heads: 4, width: 256, ..shakespeare },
            batch: 8,
        },
    ]
}

fn main() {
    // `cargo bench` passes --bench; the folder is the first other argument.
    let mut positional = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let (dir, only) = (positional.next(), positional.next());
    for case in cases().into_iter().filter(|c| only.as_deref().is_none_or(|o| o == c.name)) {
        let gpt = Gpt::new(case.cfg).unwrap();
        let init = gpt.init(1);
        let mut step = TrainStep::new(Cpu::fp32(), gpt.clone(), &init, TrainConfig::default()).unwrap();
        let mut rng = Rng::new(2);
        let t = case.cfg.context;
        let seq: Vec<u32> = (0..case.batch * t + 1).map(|_| rng.below(case.cfg.vocab as u64) as u32).collect();
        let (x, y) = (&seq[..case.batch * t], &seq[1..]);
        if let Some(dir) = &dir {
            let dir = std::path::Path::new(dir).join(case.name);
            std::fs::create_dir_all(&dir).unwrap();
            step.save_safetensors(dir.join("init.safetensors")).unwrap();
            let c = case.cfg;
            let spec = format!(
                "{{\"vocab\": {}, \"padded_vocab\": {}, \"context\": {}, \"layers\": {}, \"heads\": {}, \
                 \"width\": {}, \"batch\": {}, \"warmup\": {WARMUP}, \"runs\": {RUNS}, \"x\": {x:?}, \"y\": {y:?}}}",
                c.vocab, c.padded_vocab, c.context, c.layers, c.heads, c.width, case.batch
            );
            std::fs::write(dir.join("case.json"), spec).unwrap();
        }
        let mut first_loss = f32::NAN;
        let mut times = Vec::with_capacity(RUNS);
        for i in 0..WARMUP + RUNS {
            let started = Instant::now();
            step.step(x, y).unwrap();
            let loss = step.loss().unwrap();
            if i == 0 {
                first_loss = loss;
            }
            if i >= WARMUP {
                times.push(started.elapsed().as_secs_f64());
            }
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "gpt_cpu {} median_s {median:.6} tokens_per_s {:.0} first_loss {first_loss:.6}",
            case.name,
            (case.batch * t) as f64 / median
        );
    }
}
