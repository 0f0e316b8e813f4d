//! `cargo bench`: the kernel cases of `kiln bench`, under criterion, for tracking changes
//! over time. `kiln bench` prints the side-by-side table with reference and bandwidth.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kiln::assemble::BackendChoice;
use kiln::kernel_bench::{self, BenchCase, Prepared, Work};
use kiln_compiler::Target;
use std::time::Duration;

fn cases() -> Vec<BenchCase> {
    vec![
        kernel_bench::matmul(256),
        kernel_bench::matmul(1024),
        kernel_bench::matvec(4096, 4096),
        kernel_bench::softmax(1024, 4096),
        kernel_bench::rms_norm(1024, 4096),
        kernel_bench::elementwise_chain(4096),
    ]
}

fn backends() -> Vec<(&'static str, BackendChoice)> {
    let mut v = Vec::new();
    if cfg!(feature = "llvm") {
        v.push(("llvm", BackendChoice::Llvm));
    }
    if cfg!(feature = "cranelift") {
        v.push(("cranelift", BackendChoice::Cranelift));
    }
    v
}

fn bench(c: &mut Criterion) {
    let target: Target = "cpu:native".parse().expect("valid target");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    for case in cases() {
        let mut group = c.benchmark_group(format!("{} {}", case.name, case.shape));
        group.throughput(match case.work {
            Work::Flops(f) => Throughput::Elements(f as u64),
            Work::Bytes(b) => Throughput::Bytes(b as u64),
        });
        group.sample_size(10);
        for (name, backend) in backends() {
            for t in [1, threads] {
                let mut p = Prepared::new(&case, &target, backend, t).expect("bench case compiles");
                group.bench_function(format!("{name}/{t}t"), |b| {
                    b.iter_custom(|iters| {
                        (0..iters)
                            .map(|_| p.kernel_time().expect("bench case runs"))
                            .sum::<Duration>()
                    })
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
