//! The reader against a reference: generated playbooks, written in random
//! YAML styles (block and flow, plain, single- and double-quoted scalars,
//! anchors, aliases and merge keys, comments), read by blackstart's reader
//! and by serde-saphyr through the playbook's serde types. Both must read
//! the same playbook. A difference is a reader that changes meaning.

use blackstart_model::load;
use blackstart_model::playbook::Playbook;
use proptest::prelude::*;

/// A small deterministic generator (xorshift), seeded by proptest.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
    fn coin(&mut self) -> bool {
        self.below(2) == 0
    }
}

/// Text that YAML could misread when plain: numbers, booleans, nulls,
/// indicators, spaces, both quotes, a merge key's look.
const TRICKY: [&str; 16] = [
    "1.10", "0755", "true", "null", "~", "yes", "a: b", "x # y", "- item", "'q'", "\"dq\"", "<<",
    "0x1F", "1e3", "[a, b]", "{k: v}",
];

/// A random text value.
fn text(rng: &mut Rng) -> String {
    match rng.below(3) {
        0 => TRICKY[rng.below(TRICKY.len())].to_owned(),
        1 => format!("v{}", rng.below(1000)),
        _ => format!("{} and {}", TRICKY[rng.below(TRICKY.len())], rng.below(9)),
    }
}

/// Whether `s` reads as the same text when written plain, in block and flow.
fn plain_safe(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !matches!(s, "true" | "false" | "null" | "yes" | "no" | "on" | "off")
}

/// `s` as a YAML scalar that reads back as the text `s`, in a random style.
fn scalar(s: &str, rng: &mut Rng) -> String {
    match rng.below(3) {
        0 if plain_safe(s) => s.to_owned(),
        1 => format!("'{}'", s.replace('\'', "''")),
        _ => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
    }
}

/// A map of names to text, in flow or block style at `indent`.
fn map(entries: &[(String, String)], indent: usize, rng: &mut Rng) -> String {
    if entries.is_empty() || rng.coin() {
        let body: Vec<String> = entries
            .iter()
            .map(|(k, v)| format!("{}: {}", scalar(k, rng), scalar(v, rng)))
            .collect();
        format!("{{ {} }}", body.join(", "))
    } else {
        let pad = " ".repeat(indent);
        let mut out = String::new();
        for (k, v) in entries {
            out.push_str(&format!("\n{pad}{}: {}", scalar(k, rng), scalar(v, rng)));
            if rng.below(4) == 0 {
                out.push_str("  # a comment");
            }
        }
        out
    }
}

fn labels(rng: &mut Rng) -> Vec<(String, String)> {
    (0..rng.below(3))
        .map(|k| (format!("key{k}"), text(rng)))
        .collect()
}

/// A valid playbook in random styles.
fn playbook(seed: u64) -> String {
    let mut rng = Rng(seed | 1);
    let sites = 1 + rng.below(3);
    let systems = 1 + rng.below(4);
    let mut y = String::from(
        "apiVersion: blackstart.dev/v1alpha1\nkind: Playbook\nmetadata: { name: diff }\nspec:\n",
    );
    // A label map to repeat: anchored once, then aliased or merged.
    let shared = labels(&mut rng);
    y.push_str("  sites:\n");
    for s in 0..sites {
        y.push_str(&format!("    - id: site{s}\n"));
        if rng.coin() {
            y.push_str(&format!(
                "      name: {}\n",
                scalar(&text(&mut rng), &mut rng)
            ));
        }
        if s == 0 {
            let entries: Vec<(String, String)> = shared.clone();
            let body = if entries.is_empty() {
                "{}".to_owned()
            } else {
                let mut flow = Vec::new();
                for (k, v) in &entries {
                    flow.push(format!("{}: {}", scalar(k, &mut rng), scalar(v, &mut rng)));
                }
                format!("{{ {} }}", flow.join(", "))
            };
            y.push_str(&format!("      labels: &shared {body}\n"));
        } else {
            let own = labels(&mut rng);
            y.push_str(&format!("      labels: {}\n", map(&own, 8, &mut rng)));
        }
    }
    y.push_str("  systems:\n");
    for i in 0..systems {
        y.push_str(&format!(
            "    - id: sys{i}\n      site: site{}\n",
            rng.below(sites)
        ));
        match rng.below(3) {
            0 => y.push_str("      labels: *shared\n"),
            1 => {
                let extra = text(&mut rng);
                y.push_str(&format!(
                    "      labels:\n        <<: *shared\n        extra: {}\n",
                    scalar(&extra, &mut rng)
                ));
            }
            _ => {
                let own = labels(&mut rng);
                y.push_str(&format!("      labels: {}\n", map(&own, 8, &mut rng)));
            }
        }
        if i > 0 && rng.coin() {
            y.push_str(&format!("      dependsOn: [sys{}]\n", rng.below(i)));
        }
        y.push_str(&format!("      expectedDuration: {}s\n", 1 + rng.below(90)));
        let args: Vec<String> = (0..1 + rng.below(3))
            .map(|_| scalar(&text(&mut rng), &mut rng))
            .collect();
        if rng.coin() {
            y.push_str(&format!(
                "      start: {{ exec: {{ command: [run, {}] }} }}\n",
                args.join(", ")
            ));
        } else {
            y.push_str("      start:\n        exec:\n          command:\n            - run\n");
            for a in &args {
                y.push_str(&format!("            - {a}\n"));
            }
        }
        if rng.coin() {
            let status = 200 + rng.below(100);
            // Typed: a plain number, boolean or null stays one.
            let equals = match rng.below(3) {
                0 => [
                    "1.10", "3", "-2", "0.5", "1e3", "0755", "true", "false", "null",
                ][rng.below(9)]
                .to_owned(),
                _ => scalar(&text(&mut rng), &mut rng),
            };
            y.push_str(&format!(
                "      health: [ {{ http: {{ url: \"http://h/{i}\", expectStatus: {status}, jsonPointer: {{ pointer: /v, equals: {equals} }} }} }} ]\n"
            ));
        }
    }
    let all: Vec<String> = (0..sites).map(|s| format!("site{s}")).collect();
    y.push_str(&format!(
        "  stages:\n    - {{ name: all, select: {{ sites: [{}] }}, maxParallel: {} }}\n",
        all.join(", "),
        1 + rng.below(8)
    ));
    y
}

/// Every number as a float: `0755` is the number 755 to both readers, one
/// holding it as an integer and the other as a float; JSON equality (as the
/// engine compares `equals`) does not tell them apart.
fn numbers_as_numbers(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        J::Number(n) => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(J::Null, J::Number),
        J::Array(items) => J::Array(items.into_iter().map(numbers_as_numbers).collect()),
        J::Object(map) => J::Object(
            map.into_iter()
                .map(|(k, v)| (k, numbers_as_numbers(v)))
                .collect(),
        ),
        other => other,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_reader_reads_what_the_reference_reads(seed in any::<u64>()) {
        let yaml = playbook(seed);
        let ours = load(yaml.as_bytes())
            .unwrap_or_else(|d| panic!("blackstart refused:\n{yaml}\n{}", d.render("pb.yaml")));
        let theirs: Playbook = serde_saphyr::from_str(&yaml)
            .unwrap_or_else(|e| panic!("the reference refused:\n{yaml}\n{e}"));
        let ours = numbers_as_numbers(serde_json::to_value(ours.playbook()).unwrap_or_default());
        let theirs = numbers_as_numbers(serde_json::to_value(&theirs).unwrap_or_default());
        prop_assert_eq!(ours, theirs, "{}", yaml);
    }
}

/// The fast reader against the full parser: on every generated playbook
/// that the fast reader takes, both build the same tree, node for node,
/// positions included. The cases it declines are read by the full parser
/// alone, so they cannot differ.
#[test]
fn the_fast_reader_builds_the_full_parsers_tree() {
    let mut taken = 0;
    for seed in 0..2000u64 {
        let yaml = playbook(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        // The anchors and merge keys as generated, and without them.
        let plain = yaml
            .replace("&shared ", "")
            .replace("<<: *shared", "merged: x")
            .replace("*shared", "{}");
        for text in [&yaml, &plain] {
            if let Err(why) = blackstart_model::streaming_agrees(text.as_bytes()) {
                panic!("decoding systems while reading changed the result: {why}\n{text}");
            }
            match blackstart_model::readers_agree(text) {
                Ok(true) => taken += 1,
                Ok(false) => {}
                Err(why) => panic!("the readers differ: {why}\n{text}"),
            }
        }
    }
    assert!(taken > 1000, "the fast reader took only {taken} of 4000");
}

/// The same on the project's own playbooks and on the benchmark's shape,
/// which it must take; the global example writes flow mappings over
/// several lines, which it leaves to the full parser.
#[test]
fn the_fast_reader_takes_the_examples_and_builds_the_same_tree() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(root.join("playbooks"))
        .unwrap_or_else(|e| panic!("playbooks/: {e}"))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.push(root.join("manifests/examples/playbook-dealer-systems.yaml"));
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let multi_line_flow = file.ends_with("global-restart.yaml");
        assert_eq!(
            blackstart_model::streaming_agrees(text.as_bytes()),
            Ok(()),
            "{}",
            file.display()
        );
        assert_eq!(
            blackstart_model::readers_agree(&text),
            Ok(!multi_line_flow),
            "{}",
            file.display()
        );
    }
    let synth = blackstart_model::synth::playbook_yaml(blackstart_model::synth::Shape::new(500, 7));
    assert_eq!(blackstart_model::readers_agree(&synth), Ok(true));
}

/// Small texts at the edges of what it takes: those it takes it reads as
/// the full parser does; the rest (malformed, or beyond its part of YAML) it
/// leaves to the full parser, whose messages say what is wrong.
#[test]
fn the_fast_reader_takes_its_part_of_yaml_and_declines_the_rest() {
    let taken = [
        "a: 1\nb:\n  - x\n  - y\nc: z\n",
        "a:\n- x\n- y\nb: 2\n",
        "a: &x { k: v }\nb: *x\nc:\n  <<: *x\n  d: e\n",
        "a: 'it''s'\nb: \"q\"\nc: -5\nd: x # note\n",
        "a: [1, 2.5, ~, true, 0x1F, 0o17, 1e3, .inf]\n",
        "a: { b: [c, { d: e }], f: 'g' }\n",
        "- a: 1\n  b: 2\n- c\n- [d]\n",
        "a:\n  -\n    b: c\n",
        "\"<<\": x\nk: v\n",
        "1.10: a\ntrue: b\n",
        "a: \"x\\ny\"\n",
        "---\na: 1\n",
        "a: x#y\nb: http://h:80/p\n",
        "  a: 1\n  b: 2\n",
        "é: ü\nb: 'ñ'\n",
        "a: \"q\\\"uote\\\\ \\u00e9 \\x41 \\t\"\n",
        "a: { k: \"v\\\"\" }\n",
        "a: &x [1]\nb: &x [2]\nc: *x\n",
    ];
    let declined = [
        "a: b: c\n",
        "a:\n",
        "a: |\n  text\n",
        "a: !!str 1\n",
        "a: long\n  plain\n",
        "a: [x,\n  y]\n",
        "a: 1\na: 2\n",
        "a: 1\n---\nb: 2\n",
        "a:\n    - x\n    - y\n  b: 1\n",
        "a: [a: b]\n",
        "a: { x }\n",
        "a: [x, ]\n",
        "a: \"\\q\"\n",
        "a: *nope\n",
        "a:\tb\n",
        "a: 1\r\nb: 2\r\n",
    ];
    for text in taken {
        assert_eq!(blackstart_model::readers_agree(text), Ok(true), "{text:?}");
    }
    for text in declined {
        assert_eq!(blackstart_model::readers_agree(text), Ok(false), "{text:?}");
    }
}
