//! Writes a synthetic playbook to standard output: `cargo run -p
//! blackstart-model --example synth -- SYSTEMS [SITES] [site]` (`site`: the
//! plant stage fails per site). Used by `cargo xtask bench` and handy for
//! trying blackstart at scale.

fn main() {
    let mut args = std::env::args().skip(1);
    let systems = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let sites = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let shape = blackstart_model::synth::Shape {
        site_domains: args.next().as_deref() == Some("site"),
        ..blackstart_model::synth::Shape::new(systems, sites)
    };
    let yaml = blackstart_model::synth::playbook_yaml(shape);
    print!("{yaml}");
}
