//! Time to validate and plan generated playbooks of 1k, 10k and 100k systems
//! across 50 sites, from YAML bytes to a finished `Plan` (parse, decode,
//! whole-playbook checks, scheduling, critical path, hash).
//!
//! `cargo bench -p blackstart-model --bench plan`; `cargo xtask bench` runs it
//! with the memory benchmark and prints the table the README quotes.

use blackstart_model::synth::{Shape, playbook_yaml};
use blackstart_model::{Plan, load};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn validate_and_plan(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate+plan");
    for systems in [1_000usize, 10_000, 100_000] {
        let yaml = playbook_yaml(Shape::new(systems, 50));
        group.throughput(Throughput::Elements(systems as u64));
        if systems >= 100_000 {
            group.sample_size(10);
        } else {
            group.sample_size(20);
        }
        group.bench_with_input(BenchmarkId::from_parameter(systems), &yaml, |b, yaml| {
            // The plan is dropped outside the timing: freeing it is not planning.
            b.iter_with_large_drop(|| {
                let validated = load(yaml.as_bytes()).expect("generated playbooks are valid");
                Plan::build(validated)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, validate_and_plan);
criterion_main!(benches);
