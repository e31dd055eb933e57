//! Property tests: gnmic path text and `Path` convert into each other without
//! loss, whatever the names, keys and values contain.

use std::collections::HashMap;

use gnomon_gnmi::path::{parse_path, path_matches, path_to_string};
use gnomon_gnmi::proto::gnmi::{Path, PathElem};
use proptest::prelude::*;

fn origin() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just(String::new()),
        1 => "[a-z][a-z0-9_-]{0,14}",
    ]
}

fn elem_name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z][a-z0-9_-]{0,10}",
        3 => "[a-z][a-z0-9_-]{0,8}:[a-z][a-z0-9_-]{0,10}",
        1 => Just("*".to_string()),
        1 => Just("...".to_string()),
        // Characters that need escaping in names.
        1 => "[a-z/\\[\\]\\\\=:. ]{1,8}",
    ]
}

fn key_value() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => Just("*".to_string()),
        2 => "[A-Za-z][A-Za-z0-9-]{0,6}/[0-9]{1,2}(/[0-9]{1,2})?",
        4 => "[A-Za-z0-9 /=:.\\[\\]\\\\_*-]{0,16}",
    ]
}

fn keys() -> impl Strategy<Value = HashMap<String, String>> {
    prop::collection::hash_map("[a-z][a-z0-9_-]{0,6}", key_value(), 0..4)
}

fn path() -> impl Strategy<Value = Path> {
    (
        origin(),
        prop::collection::vec(
            (elem_name(), keys()).prop_map(|(name, key)| PathElem { name, key }),
            0..7,
        ),
    )
        .prop_map(|(origin, elem)| Path {
            origin,
            elem,
            ..Default::default()
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parse_of_print_gives_back_the_path(p in path()) {
        let text = path_to_string(&p);
        let parsed = parse_path(&text);
        prop_assert_eq!(parsed.as_ref(), Ok(&p), "text {:?}", text);
    }

    #[test]
    fn print_of_parse_gives_back_canonical_text(p in path()) {
        let text = path_to_string(&p);
        let reparsed = parse_path(&text).map(|q| path_to_string(&q));
        prop_assert_eq!(reparsed, Ok(text));
    }

    #[test]
    fn a_path_matches_itself_and_its_descendants(p in path(), extra in "[a-z]{1,5}") {
        // Data paths carry no wildcards; strip them for this property.
        let mut concrete = p.clone();
        concrete.elem.retain(|e| e.name != "*" && e.name != "...");
        prop_assert!(path_matches(&concrete, &concrete));
        let mut child = concrete.clone();
        child.elem.push(PathElem { name: extra, key: HashMap::new() });
        prop_assert!(path_matches(&concrete, &child));
    }

    #[test]
    fn garbage_never_panics(
        s in prop_oneof!["\\PC{0,40}", "[a-z/\\[\\]=:\\\\*. ]{0,30}"]
    ) {
        if let Ok(p) = parse_path(&s) {
            let canonical = path_to_string(&p);
            prop_assert_eq!(parse_path(&canonical), Ok(p));
        }
    }
}

#[test]
fn unescaped_slash_and_open_bracket_inside_keys_are_accepted() {
    let loose = parse_path("/network-instances/network-instance[name=default]/afts/ipv4-unicast/ipv4-entry[prefix=10.0.0.0/24]").unwrap();
    assert_eq!(loose.elem[4].key["prefix"], "10.0.0.0/24");
    assert_eq!(
        path_to_string(&loose),
        "/network-instances/network-instance[name=default]/afts/ipv4-unicast/ipv4-entry[prefix=10.0.0.0/24]"
    );
    let bracket = parse_path("/a[k=x[y]").unwrap();
    assert_eq!(path_to_string(&bracket), r"/a[k=x\[y]");
}
