//! gnmic path syntax: the parser never panics, and every path it accepts prints back to
//! a string that parses to the same path.
#![no_main]

use gnomon_gnmi::path::{parse_path, path_to_string, path_without_keys};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Ok(path) = parse_path(text) else {
        return;
    };
    let printed = path_to_string(&path);
    match parse_path(&printed) {
        Ok(reparsed) => assert_eq!(
            reparsed, path,
            "{text:?} printed as {printed:?} parses to a different path"
        ),
        Err(error) => panic!("{text:?} printed as {printed:?} no longer parses: {error}"),
    }
    // The canonical text is a fixed point of print∘parse.
    assert_eq!(path_to_string(&parse_path(&printed).unwrap()), printed);
    let _ = path_without_keys(&path);
});
