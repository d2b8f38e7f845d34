//! Synthetic playbooks of any size, for benchmarks, property tests and large
//! drills.
//!
//! The output is YAML text, not a `Playbook`, so whoever measures with it
//! measures the whole path a user's file takes. It is deterministic: the same
//! shape always gives the same bytes, so figures from two machines compare.

use std::fmt::Write as _;

/// The size and shape of a generated playbook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub systems: usize,
    pub sites: usize,
    /// At most this many dependencies per system.
    pub max_deps: usize,
    pub seed: u64,
    /// The plant stage fails per site (`failureDomain: site`).
    pub site_domains: bool,
}

impl Shape {
    pub fn new(systems: usize, sites: usize) -> Shape {
        Shape {
            systems,
            sites: sites.max(1),
            max_deps: 3,
            seed: 0x5eed,
            site_domains: false,
        }
    }
}

/// The tiers, in stage order, and the share of systems each one gets.
const TIERS: [(&str, usize); 4] = [("core", 5), ("business", 20), ("plant", 40), ("dealer", 35)];

/// A small, fast, deterministic generator (SplitMix64); quality far beyond
/// what picking dependencies needs, and no dependency on a rand crate.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn tier_of(i: usize, n: usize) -> usize {
    let mut bound = 0;
    for (t, (_, share)) in TIERS.iter().enumerate() {
        bound += share;
        if i * 100 < bound * n {
            return t;
        }
    }
    TIERS.len() - 1
}

/// A valid playbook: systems spread over the sites, each depending on up to
/// `max_deps` systems written before it (so the graph is acyclic and every
/// dependency is in the same or an earlier stage), one stage per tier.
pub fn playbook_yaml(shape: Shape) -> String {
    let n = shape.systems;
    let mut rng = SplitMix(shape.seed);
    let mut o = String::with_capacity(n * 280 + 4096);
    let _ = writeln!(o, "apiVersion: blackstart.dev/v1alpha1");
    let _ = writeln!(o, "kind: Playbook");
    let _ = writeln!(o, "metadata:\n  name: synthetic-{n}");
    let _ = writeln!(o, "spec:");
    let _ = writeln!(
        o,
        "  defaults:\n    startTimeout: 5m\n    probe: {{ interval: 2s, timeout: 1s, failureThreshold: 3 }}"
    );
    let _ = writeln!(o, "  sites:");
    for s in 0..shape.sites {
        let _ = writeln!(
            o,
            "    - id: site-{s:03}\n      name: Site {s}\n      labels: {{ region: r{} }}",
            s % 5
        );
    }
    let _ = writeln!(o, "  systems:");
    for i in 0..n {
        let tier = TIERS[tier_of(i, n)].0;
        let _ = writeln!(o, "    - id: sys-{i:06}");
        let _ = writeln!(o, "      site: site-{:03}", i % shape.sites);
        let _ = writeln!(o, "      tier: {tier}");
        if i > 0 {
            let count = rng.below(shape.max_deps + 1).min(i);
            let mut deps: Vec<usize> = (0..count).map(|_| i - 1 - rng.below(i.min(500))).collect();
            deps.sort_unstable();
            deps.dedup();
            if !deps.is_empty() {
                let list: Vec<String> = deps.iter().map(|d| format!("sys-{d:06}")).collect();
                let _ = writeln!(o, "      dependsOn: [{}]", list.join(", "));
            }
        }
        let _ = writeln!(o, "      expectedDuration: {}s", 5 + rng.below(120));
        let _ = writeln!(o, "      start: {{ exec: {{ command: [start, s{i}] }} }}");
        let _ = writeln!(o, "      stop: {{ exec: {{ command: [stop, s{i}] }} }}");
        let _ = writeln!(
            o,
            "      health: [{{ tcp: {{ address: \"127.0.0.1:{}\" }} }}]",
            1024 + i % 60000
        );
    }
    let _ = writeln!(o, "  stages:");
    for (t, (tier, _)) in TIERS.iter().enumerate() {
        if !(0..n).any(|i| tier_of(i, n) == t) {
            continue;
        }
        let _ = writeln!(
            o,
            "    - name: {tier}\n      select: {{ tiers: [{tier}] }}\n      maxParallel: 64"
        );
        if shape.site_domains && *tier == "plant" {
            let _ = writeln!(o, "      failureDomain: site");
        }
        let _ = writeln!(
            o,
            "      gate: {{ soak: 1m, onFailure: {} }}",
            if t == 0 { "pause" } else { "rollback" }
        );
    }
    o
}

/// A "billion laughs" document: `levels` anchors, each a list of ten
/// aliases to the one before, so it expands to 10^(levels+1) scalars while
/// its text stays under a kilobyte. For tests of the parse budgets.
pub fn alias_bomb(levels: usize) -> String {
    let mut o = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..=levels {
        let aliases = vec![format!("*a{}", i - 1); 10].join(", ");
        let _ = writeln!(o, "a{i}: &a{i} [{aliases}]");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_playbooks_are_valid_and_deterministic() {
        let yaml = playbook_yaml(Shape::new(500, 12));
        assert_eq!(yaml, playbook_yaml(Shape::new(500, 12)));
        let validated =
            crate::load(yaml.as_bytes()).unwrap_or_else(|d| panic!("{}", d.render("synth")));
        assert_eq!(validated.playbook().spec.systems.len(), 500);
        assert_eq!(validated.playbook().spec.sites.len(), 12);
    }
}
