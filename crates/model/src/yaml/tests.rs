use super::*;

fn parse(text: &str) -> Result<Tree<'_>, Diagnostic> {
    super::parse(text, true)
}

#[test]
fn nodes_and_keys_carry_positions() {
    let tree = parse("a: 1\nb:\n  - x\n  - {c: true}\n").unwrap();
    let root = tree.root.as_ref().unwrap();
    let entries = tree.map(root).unwrap();
    assert_eq!(entries[0].0.name, "a");
    assert_eq!(entries[0].0.pos, Pos::new(1, 1));
    assert_eq!(entries[0].1.pos, Pos::new(1, 4));
    assert_eq!(entries[0].1.value, Value::Int(1));
    let items = tree.seq(&entries[1].1).unwrap();
    assert_eq!(items[0].pos, Pos::new(3, 5));
    assert_eq!(items[0].value, Value::Str("x".into()));
    let inner = tree.map(&items[1]).unwrap();
    assert_eq!(inner[0].0.name, "c");
    assert_eq!(inner[0].1.value, Value::Bool(true));
}

#[test]
fn plain_scalars_follow_the_core_schema() {
    let tree = parse(
        "[~, null, true, False, 12, -3, 0x1f, 0o17, 1.5, 1e3, .inf, 1.10.2, '12', yes, 08:30]",
    )
    .unwrap();
    let items = tree.seq(tree.root.as_ref().unwrap()).unwrap();
    let values: Vec<String> = items.iter().map(|n| format!("{:?}", n.value)).collect();
    assert_eq!(
        values,
        [
            "Null",
            "Null",
            "Bool(true)",
            "Bool(false)",
            "Int(12)",
            "Int(-3)",
            "Int(31)",
            "Int(15)",
            "Float(1.5)",
            "Float(1000.0)",
            "Float(inf)",
            "Str(\"1.10.2\")",
            "Str(\"12\")",
            "Str(\"yes\")",
            "Str(\"08:30\")"
        ]
    );
}

#[test]
fn anchors_aliases_and_merge_keys() {
    let tree = parse("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\ncopy: *b\n").unwrap();
    let root = tree.map(tree.root.as_ref().unwrap()).unwrap();
    let other = tree.map(&root[1].1).unwrap();
    let pairs: Vec<(String, String)> = other
        .iter()
        .map(|(k, v)| (k.name.to_string(), v.value.to_string()))
        .collect();
    assert_eq!(pairs, [("y".into(), "3".into()), ("x".into(), "1".into())]);
    assert_eq!(tree.map(&root[2].1).unwrap().len(), 2);
}

#[test]
fn syntax_errors_have_a_position() {
    let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
    assert!(err.pos.line >= 1, "{err:?}");
    assert!(err.message.starts_with("invalid YAML"), "{}", err.message);
}

#[test]
fn duplicate_keys_are_refused() {
    let err = parse("a: 1\nb: 2\na: 2\n").unwrap_err();
    assert_eq!(err.pos, Pos::new(3, 1), "{err:?}");
    assert!(err.message.contains("duplicate key `a`"));
}

#[test]
fn more_than_one_document_is_refused() {
    let err = parse("a: 1\n---\nb: 2\n").unwrap_err();
    assert!(
        err.message.contains("more than one YAML document"),
        "{}",
        err.message
    );
}

#[test]
fn alias_bomb_is_refused() {
    let err = parse(&crate::synth::alias_bomb(11)).unwrap_err();
    assert!(err.message.contains("YAML nodes"), "{}", err.message);
}

#[test]
fn deep_nesting_is_refused_without_overflow() {
    let flow = "[".repeat(100_000) + &"]".repeat(100_000);
    assert!(parse(&flow).is_err());
    let block: String = (0..100_000)
        .map(|i| format!("{}- \n", " ".repeat(i % 200)))
        .collect();
    assert!(parse(&block).is_err());
    let maps: String = (0..100_000)
        .map(|i| format!("{}k:\n", " ".repeat(i)))
        .take(2000)
        .collect();
    assert!(parse(&maps).is_err());
}
