//! Turns request paths (prefix + path, wildcards, deprecated `element` strings) into the set
//! of leaves they cover, and decides how responses frame those leaves (prefix echo).

use std::collections::HashSet;

use gnomon_gnmi::path::{elems_of, join_paths, path_matches, PathDisplay};
use gnomon_gnmi::proto::gnmi::{Path, PathElem};
use tonic::Status;

use crate::model::LeafTable;

/// Leaves covered by one request path.
#[derive(Clone, Debug)]
pub struct Selection {
    /// The request path after joining with the prefix (elements only).
    pub pattern: Path,
    /// Indexes into the leaf table, in tree order.
    pub leaves: Vec<usize>,
}

/// Origins the simulated tree answers to (its data is OpenConfig).
fn origin_supported(origin: &str) -> bool {
    origin.is_empty() || origin.starts_with("openconfig")
}

fn without_module(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

/// Resolves `prefix` + `path` against the tree.
///
/// Status codes: a path the tree's schema does not have (unknown element or key name,
/// foreign origin) is INVALID_ARGUMENT; a path that fits the schema but names no existing
/// instance (e.g. `interface[name=Ethernet99]`) is NOT_FOUND.
pub fn select(table: &LeafTable, prefix: Option<&Path>, path: &Path) -> Result<Selection, Status> {
    let joined = join_paths(prefix, path);
    if !origin_supported(&joined.origin) {
        return Err(Status::invalid_argument(format!(
            "unsupported origin {:?} in path {}: this target serves OpenConfig data",
            joined.origin,
            PathDisplay(&joined)
        )));
    }
    let pattern = Path {
        elem: joined.elem.clone(),
        ..Default::default()
    };
    check_key_names(table, &pattern)?;
    let leaves: Vec<usize> = table
        .leaves
        .iter()
        .enumerate()
        .filter(|(_, leaf)| path_matches(&pattern, &leaf.path))
        .map(|(index, _)| index)
        .collect();
    if leaves.is_empty() {
        let schema_pattern = Path {
            elem: pattern
                .elem
                .iter()
                .map(|elem| PathElem {
                    name: elem.name.clone(),
                    key: Default::default(),
                })
                .collect(),
            ..Default::default()
        };
        let in_schema = table
            .leaves
            .iter()
            .any(|leaf| path_matches(&schema_pattern, &leaf.path));
        return Err(if in_schema {
            Status::not_found(format!("no data at {}", PathDisplay(&joined)))
        } else {
            Status::invalid_argument(format!(
                "unknown path {}: not part of the simulated OpenConfig tree",
                PathDisplay(&joined)
            ))
        });
    }
    Ok(Selection { pattern, leaves })
}

/// Rejects keys the tree does not have, e.g. `interface[id=1]` (the key is `name`).
fn check_key_names(table: &LeafTable, pattern: &Path) -> Result<(), Status> {
    let known: HashSet<(&str, &str)> = table
        .leaves
        .iter()
        .flat_map(|leaf| leaf.path.elem.iter())
        .flat_map(|elem| {
            elem.key
                .keys()
                .map(|key| (elem.name.as_str(), key.as_str()))
        })
        .collect();
    for elem in &pattern.elem {
        let name = without_module(&elem.name);
        if name == "*" || name == "..." {
            continue;
        }
        for key in elem.key.keys() {
            if !known.contains(&(name, key.as_str())) {
                return Err(Status::invalid_argument(format!(
                    "unknown key {key:?} on element {:?} in path {}",
                    elem.name,
                    PathDisplay(pattern)
                )));
            }
        }
    }
    Ok(())
}

/// How notifications carry paths: the echoed request prefix, and how many leading elements
/// of each leaf path that prefix already covers.
#[derive(Clone, Debug, Default)]
pub struct Framing {
    pub prefix: Option<Path>,
    pub covered: usize,
}

impl Framing {
    /// Echoes the request prefix. A prefix with wildcards cannot name one concrete place, so
    /// then only its origin/target are echoed and update paths are given in full.
    pub fn for_prefix(prefix: Option<&Path>) -> Framing {
        let Some(prefix) = prefix else {
            return Framing::default();
        };
        let elems = elems_of(prefix).into_owned();
        let has_wildcard = elems.iter().any(|elem| {
            elem.name == "*" || elem.name == "..." || elem.key.values().any(|v| v == "*")
        });
        let covered = if has_wildcard { 0 } else { elems.len() };
        let echoed = Path {
            origin: prefix.origin.clone(),
            target: prefix.target.clone(),
            elem: if has_wildcard { Vec::new() } else { elems },
            ..Default::default()
        };
        if echoed.origin.is_empty() && echoed.target.is_empty() && echoed.elem.is_empty() {
            return Framing::default();
        }
        Framing {
            prefix: Some(echoed),
            covered,
        }
    }

    /// `full` (a concrete path from the tree) relative to the echoed prefix.
    pub fn relative(&self, full: &Path) -> Path {
        Path {
            elem: full.elem[self.covered.min(full.elem.len())..].to_vec(),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gnomon_gnmi::path::parse_path;
    use tonic::Code;

    fn selected(prefix: Option<&str>, path: &str) -> Result<Vec<String>, Status> {
        let table = LeafTable::new(2);
        let prefix = prefix.map(|p| parse_path(p).unwrap());
        let selection = select(&table, prefix.as_ref(), &parse_path(path).unwrap())?;
        Ok(selection
            .leaves
            .iter()
            .map(|&i| PathDisplay(&table.leaves[i].path).to_string())
            .collect())
    }

    #[test]
    fn wildcard_keys_and_prefix_select_every_instance() {
        let leaves = selected(Some("/interfaces"), "interface[name=*]/state/oper-status").unwrap();
        assert_eq!(
            leaves,
            [
                "/interfaces/interface[name=Ethernet1]/state/oper-status",
                "/interfaces/interface[name=Ethernet2]/state/oper-status"
            ]
        );
        assert_eq!(
            selected(None, "/").unwrap().len(),
            LeafTable::new(2).leaves.len()
        );
        assert_eq!(
            selected(None, "/interfaces/interface/state/counters")
                .unwrap()
                .len(),
            16
        );
    }

    #[test]
    fn unknown_schema_is_invalid_and_missing_instance_is_not_found() {
        assert_eq!(
            selected(None, "/nope").unwrap_err().code(),
            Code::InvalidArgument
        );
        assert_eq!(
            selected(None, "/interfaces/interface[id=1]")
                .unwrap_err()
                .code(),
            Code::InvalidArgument
        );
        assert_eq!(
            selected(None, "/interfaces/interface[name=Ethernet9]")
                .unwrap_err()
                .code(),
            Code::NotFound
        );
        assert_eq!(
            selected(None, "foo:/system").unwrap_err().code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn deprecated_element_strings_are_understood() {
        let table = LeafTable::new(2);
        #[allow(deprecated)]
        let path = Path {
            element: vec![
                "interfaces".into(),
                "interface[name=Ethernet2]".into(),
                "state".into(),
            ],
            ..Default::default()
        };
        let selection = select(&table, None, &path).unwrap();
        assert_eq!(selection.leaves.len(), 11);
    }

    #[test]
    fn framing_echoes_concrete_prefixes_only() {
        let concrete = parse_path("/interfaces/interface[name=Ethernet1]").unwrap();
        let framing = Framing::for_prefix(Some(&concrete));
        assert_eq!(framing.covered, 2);
        let full = parse_path("/interfaces/interface[name=Ethernet1]/state/name").unwrap();
        assert_eq!(
            PathDisplay(&framing.relative(&full)).to_string(),
            "/state/name"
        );

        let mut wild = parse_path("/interfaces/interface[name=*]").unwrap();
        wild.target = "dev1".into();
        let framing = Framing::for_prefix(Some(&wild));
        assert_eq!(framing.covered, 0);
        assert_eq!(framing.prefix.unwrap().target, "dev1");

        assert!(Framing::for_prefix(Some(&Path::default())).prefix.is_none());
    }
}
