//! Peak heap while validating and planning generated playbooks of 1k, 10k
//! and 100k systems across 50 sites and writing the plan as JSON to a
//! file, counting the YAML text while it is held, as the CLI's `plan` does.
//!
//! A counting global allocator records the high-water mark, so the figure is
//! exact and repeatable (unlike RSS, it does not depend on the allocator's
//! caching). `cargo bench -p blackstart-model --bench plan_memory`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use blackstart_model::synth::{Shape, playbook_yaml};
use blackstart_model::{Plan, load_owned};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the
// counters only observe sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size > layout.size() {
                let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                    + (new_size - layout.size());
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                CURRENT.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn main() {
    // `cargo bench` passes `--bench`; a filter argument, if any, is ignored.
    println!(
        "{:>9}  {:>10}  {:>12}  {:>10}",
        "systems", "yaml MiB", "peak MiB", "seconds"
    );
    let out = std::env::temp_dir().join(format!(
        "blackstart-plan-memory-{}.json",
        std::process::id()
    ));
    for systems in [1_000usize, 10_000, 100_000] {
        let yaml = playbook_yaml(Shape::new(systems, 50));
        // Counted from before the text, as `blackstart plan FILE -o
        // plan.json` holds it: the file's bytes while the playbook is read
        // from them, then the checks, the plan and the JSON written as it
        // is rendered.
        let base = CURRENT.load(Ordering::Relaxed) - yaml.len();
        PEAK.store(CURRENT.load(Ordering::Relaxed), Ordering::Relaxed);
        let started = Instant::now();
        let yaml_mib = yaml.len() as f64 / (1024.0 * 1024.0);
        let validated = load_owned(yaml.into_bytes()).expect("generated playbooks are valid");
        let plan = Plan::build(validated);
        let file = std::fs::File::create(&out).expect("a temporary file");
        let mut w = std::io::BufWriter::new(file);
        blackstart_model::render::write_json(&plan, &mut w).expect("the JSON is written");
        drop(w);
        let elapsed = started.elapsed();
        assert_eq!(plan.system_count(), systems);
        drop(plan);
        let peak = PEAK.load(Ordering::Relaxed) - base;
        let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
        println!(
            "{systems:>9}  {yaml_mib:>10.1}  {:>12.1}  {:>10.3}",
            mib(peak),
            elapsed.as_secs_f64()
        );
    }
    let _ = std::fs::remove_file(&out);
}
