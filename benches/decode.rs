//! One token of the default byte model (d_model 128 x 4 layers, f32, batch 1) on the CPU: the
//! fused decoder's CPU twins (`mamba_model::Decoder`) against the generic step
//! (`MambaLM::step`, the tensor ops). `mamba generate` takes the faster on the CPU.
//!
//! Run: `cargo bench -p mamba-benches --bench decode` (throughput in tokens per second).

use criterion::{Criterion, Throughput};
use mamba_engine::DType;
use mamba_model::{Decoder, Launch, MambaConfig, MambaLM};
use std::hint::black_box;

fn benches(c: &mut Criterion) {
    let model = MambaLM::new(MambaConfig::new(128, 4), DType::F32, 1).unwrap();
    let mut group = c.benchmark_group("decode one token, default model, batch 1");
    group.throughput(Throughput::Elements(1));
    let mut decoder = Decoder::new(&model, 1, Launch::Fused).unwrap();
    let mut id = 0;
    group.bench_function("fused (CPU twins)", |b| {
        b.iter(|| {
            id = (id + 7) % 256;
            black_box(decoder.step(&[id]).unwrap())
        })
    });
    let mut state = model.new_state(1).unwrap();
    group.bench_function("generic step", |b| {
        b.iter(|| {
            id = (id + 7) % 256;
            black_box(model.step(&[id], &mut state).unwrap().to_vec_f64().unwrap())
        })
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
