//! The memory ledger: bytes saved for backward per graph, device memory, the report.
//!
//! `saved_in_graph` walks one graph, so it is exact even while other tests run in
//! parallel threads. The device counters are process-wide: the memory test allocates
//! 64 MiB and allows generous slack for whatever the other threads of this binary
//! (which only touch kilobytes) do meanwhile.

use mamba_engine::{
    ledger::{self, OpSaved},
    DType, Device, Tensor,
};
use mamba_tests::{randn, uniform};

const F64: usize = 8;

fn saved(t: &Tensor, op: &str) -> OpSaved {
    ledger::saved_in_graph(t).per_op.get(op).copied().unwrap_or_default()
}

#[test]
fn exp_saves_its_output_and_add_saves_nothing() {
    let x = randn(&[3, 4], 1).requires_grad();
    let y = x.exp().unwrap();
    let r = ledger::saved_in_graph(&y);
    assert_eq!(r.per_op.get("exp"), Some(&OpSaved { calls: 1, bytes: 12 * F64 }));
    assert_eq!(r.total_bytes, 12 * F64);

    let z = y.add(&x).unwrap();
    let r = ledger::saved_in_graph(&z);
    assert_eq!(r.per_op.get("add"), Some(&OpSaved { calls: 1, bytes: 0 }));
    assert_eq!(r.total_bytes, 12 * F64, "add adds nothing to what exp saved");
}

#[test]
fn f32_halves_the_bytes() {
    let x = randn(&[5, 7], 2).to_dtype(DType::F32).unwrap().requires_grad();
    let y = x.sigmoid().unwrap();
    assert_eq!(saved(&y, "sigmoid"), OpSaved { calls: 1, bytes: 35 * 4 });
}

#[test]
fn a_buffer_saved_twice_counts_once_in_the_total() {
    let x = randn(&[4, 4], 3).requires_grad();
    let y = x.exp().unwrap(); // saves y
    let z = y.mul(&y).unwrap(); // saves y and y: one buffer
    let r = ledger::saved_in_graph(&z);
    assert_eq!(r.per_op["mul"], OpSaved { calls: 1, bytes: 16 * F64 });
    assert_eq!(r.per_op["exp"], OpSaved { calls: 1, bytes: 16 * F64 });
    assert_eq!(r.total_bytes, 16 * F64, "exp and mul keep the same buffer alive");

    // two distinct operands: both are counted
    let w = randn(&[4, 4], 4).requires_grad();
    let p = x.mul(&w).unwrap();
    assert_eq!(saved(&p, "mul").bytes, 2 * 16 * F64);
}

#[test]
fn views_and_constant_ops_save_nothing() {
    let x = randn(&[2, 3, 4], 5).requires_grad();
    let y = x
        .transpose(0, 2)
        .unwrap()
        .narrow(0, 1, 2)
        .unwrap()
        .reshape(&[6, 2])
        .unwrap()
        .affine(2.0, 1.0)
        .unwrap()
        .neg()
        .unwrap()
        .sum(&[1], false)
        .unwrap();
    let r = ledger::saved_in_graph(&y);
    assert_eq!(r.total_bytes, 0, "{:?}", r.per_op);
    // the copy made by reshaping the strided view is in the graph, but saves nothing
    assert_eq!(r.per_op.get("copy").map(|s| s.calls), Some(1), "{:?}", r.per_op);
}

#[test]
fn a_graph_counts_every_node() {
    let x = randn(&[8], 6).requires_grad();
    let mut y = x.clone();
    for _ in 0..10 {
        y = y.tanh().unwrap(); // each saves its own 8-element output
    }
    let r = ledger::saved_in_graph(&y);
    assert_eq!(r.per_op["tanh"], OpSaved { calls: 10, bytes: 10 * 8 * F64 });
    assert_eq!(r.total_bytes, 10 * 8 * F64);
    assert!(ledger::saved_in_graph(&x).per_op.is_empty(), "a leaf has no graph");
    assert_eq!(ledger::saved_in_graph(&x.detach().exp().unwrap()).total_bytes, 0);
}

#[test]
fn matmul_saves_both_operands() {
    let a = randn(&[3, 5], 7).requires_grad();
    let b = randn(&[5, 2], 8).requires_grad();
    let c = a.matmul(&b).unwrap();
    assert_eq!(saved(&c, "matmul").bytes, (15 + 10) * F64);
}

#[test]
fn device_memory_tracks_allocation_and_free() {
    const BIG: usize = 64 << 20; // 64 MiB
    const SLACK: usize = 8 << 20;
    let before = ledger::memory(Device::Cpu).current;
    let big = Tensor::zeros(&[BIG / F64], DType::F64, Device::Cpu).unwrap();
    let during = ledger::memory(Device::Cpu);
    assert!(during.current.abs_diff(before + BIG) <= SLACK, "allocated 64 MiB: {before} -> {}", during.current);
    assert!(during.peak >= during.current);
    // a view shares the buffer: no new bytes
    let view = big.narrow(0, 0, 10).unwrap();
    assert!(ledger::memory(Device::Cpu).current.abs_diff(during.current) <= SLACK);
    drop(big);
    assert!(ledger::memory(Device::Cpu).current >= before + BIG - SLACK, "the view keeps the buffer alive");
    drop(view);
    let after = ledger::memory(Device::Cpu).current;
    assert!(after.abs_diff(before) <= SLACK, "freed 64 MiB: {before} -> {after}");
    assert!(ledger::memory(Device::Cpu).peak >= before + BIG - SLACK, "the peak remembers the allocation");
}

#[test]
fn report_lists_devices_and_saving_ops() {
    let x = uniform(&[3], 0.5, 2.0, 9).requires_grad();
    let _keep = x.rsqrt().unwrap().sum_all().unwrap(); // rsqrt saves its output
    assert!(ledger::saved_by_op().get("rsqrt").is_some_and(|s| s.calls >= 1 && s.bytes >= 3 * F64));
    let text = ledger::report();
    println!("{text}");
    assert!(text.contains("cpu"), "{text}");
    assert!(text.contains("rsqrt"), "{text}");
}

#[test]
fn human_sizes() {
    assert_eq!(ledger::human(512), "512 B");
    assert_eq!(ledger::human(1536), "1.5 KiB");
    assert_eq!(ledger::human(64 << 20), "64.0 MiB");
    assert_eq!(ledger::human(3 << 30), "3.00 GiB");
}
