//! Where a target goes: gnmic's placement rules. Tags are compared in order and the member
//! whose tag list shares the longest prefix with the target's tags wins; ties go to the
//! member holding the fewest target locks (then the smaller name, so placement is repeatable).

use std::collections::{BTreeMap, HashSet};

/// A live cluster member as the placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Instance name (the value it writes into the target locks it holds).
    pub name: String,
    /// Registration tags in order: `cluster-name=…`, `instance-name=…`, `__protocol=…`, custom tags.
    pub tags: Vec<String>,
    /// Number of target locks it holds now (plus placements in flight).
    pub load: usize,
}

/// Why no member could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("no cluster member is registered")]
    NoMembers,
    #[error("no more suitable members for this target (all candidates were tried)")]
    NoSuitableMember,
}

/// How many leading tags of `member_tags` equal the target's tags at the same position.
pub fn tag_prefix_match(member_tags: &[String], target_tags: &[String]) -> usize {
    member_tags
        .iter()
        .zip(target_tags)
        .take_while(|(m, t)| m == t)
        .count()
}

/// Chooses the member for a target with `target_tags`, skipping `denied` members where the
/// choice allows it (as gnmic: a single member or a single tag match is taken regardless).
pub fn select_member<'a>(
    candidates: &'a [Candidate],
    target_tags: &[String],
    denied: &HashSet<String>,
) -> Result<&'a Candidate, PlacementError> {
    match candidates {
        [] => return Err(PlacementError::NoMembers),
        [only] => return Ok(only),
        _ => {}
    }
    let mut best: Vec<&Candidate> = candidates.iter().collect();
    if !target_tags.is_empty() {
        let scores: Vec<usize> = candidates
            .iter()
            .map(|c| tag_prefix_match(&c.tags, target_tags))
            .collect();
        let top = scores.iter().copied().max().unwrap_or(0);
        best = candidates
            .iter()
            .zip(&scores)
            .filter(|(_, s)| **s == top)
            .map(|(c, _)| c)
            .collect();
        if let [only] = best.as_slice() {
            return Ok(only);
        }
    }
    best.into_iter()
        .filter(|c| !denied.contains(&c.name))
        .min_by(|a, b| a.load.cmp(&b.load).then_with(|| a.name.cmp(&b.name)))
        .ok_or(PlacementError::NoSuitableMember)
}

/// The member whose tags match `target_tags` strictly better than member `to`'s (the best
/// match, ties by name), if there is one: the affinity rule would move a target placed on
/// `to` over to it. `None` for a target without tags, as affinity leaves those alone.
pub fn better_match<'a>(
    candidates: &'a [Candidate],
    target_tags: &[String],
    to: &str,
) -> Option<&'a Candidate> {
    if target_tags.is_empty() {
        return None;
    }
    let score = |c: &Candidate| tag_prefix_match(&c.tags, target_tags);
    let to_score = candidates.iter().find(|c| c.name == to).map_or(0, score);
    candidates
        .iter()
        .filter(|c| score(c) > to_score)
        .max_by(|a, b| score(a).cmp(&score(b)).then_with(|| b.name.cmp(&a.name)))
}

/// One step of a rebalance: move `target` from `from` to `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Move {
    pub target: String,
    pub from: String,
    pub to: String,
}

/// Plans moves from the most to the least loaded member until their difference is below
/// `max_spread` (gnmic uses 2). `owned` maps each member to the targets it holds; members with
/// no targets must be present with an empty list. Targets are taken in name order.
pub fn plan_rebalance(owned: &BTreeMap<String, Vec<String>>, max_spread: usize) -> Vec<Move> {
    let max_spread = max_spread.max(1);
    let mut owned: BTreeMap<String, Vec<String>> = owned
        .iter()
        .map(|(m, ts)| {
            let mut ts = ts.clone();
            ts.sort();
            ts.reverse(); // pop() takes the alphabetically first
            (m.clone(), ts)
        })
        .collect();
    let mut moves = Vec::new();
    loop {
        let most = owned
            .iter()
            .max_by(|a, b| a.1.len().cmp(&b.1.len()).then_with(|| b.0.cmp(a.0)));
        let least = owned
            .iter()
            .min_by(|a, b| a.1.len().cmp(&b.1.len()).then_with(|| a.0.cmp(b.0)));
        let (Some((most, most_targets)), Some((least, least_targets))) = (most, least) else {
            break;
        };
        if most_targets.len() - least_targets.len() < max_spread || most == least {
            break;
        }
        let (most, least) = (most.clone(), least.clone());
        let Some(target) = owned.get_mut(&most).and_then(Vec::pop) else {
            break;
        };
        owned.entry(least.clone()).or_default().push(target.clone());
        moves.push(Move {
            target,
            from: most,
            to: least,
        });
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, custom: &[&str], load: usize) -> Candidate {
        let mut tags = vec![
            "cluster-name=c1".to_string(),
            format!("instance-name={name}"),
            "__protocol=http".to_string(),
        ];
        tags.extend(custom.iter().map(|t| t.to_string()));
        Candidate {
            name: name.to_string(),
            tags,
            load,
        }
    }

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn least_loaded_member_wins_without_tags() {
        let members = [
            member("a", &[], 3),
            member("b", &[], 1),
            member("c", &[], 2),
        ];
        let chosen = select_member(&members, &[], &HashSet::new()).unwrap();
        assert_eq!(chosen.name, "b");
    }

    #[test]
    fn equal_load_is_broken_by_name() {
        let members = [member("b", &[], 1), member("a", &[], 1)];
        assert_eq!(
            select_member(&members, &[], &HashSet::new()).unwrap().name,
            "a"
        );
    }

    #[test]
    fn longest_ordered_tag_prefix_wins_over_load() {
        let members = [member("a", &["site=dc1"], 0), member("b", &["site=dc2"], 9)];
        let target = tags(&["cluster-name=c1", "instance-name=b"]);
        assert_eq!(
            select_member(&members, &target, &HashSet::new())
                .unwrap()
                .name,
            "b"
        );
        // A custom tag only matches after the first three registration tags.
        let target = tags(&[
            "cluster-name=c1",
            "instance-name=b",
            "__protocol=http",
            "site=dc2",
        ]);
        assert_eq!(
            select_member(&members, &target, &HashSet::new())
                .unwrap()
                .name,
            "b"
        );
    }

    #[test]
    fn tag_ties_fall_back_to_load() {
        let members = [
            member("a", &[], 5),
            member("b", &[], 1),
            member("c", &[], 0),
        ];
        // Matches cluster-name on every member: all tie, least load wins.
        let target = tags(&["cluster-name=c1", "instance-name=zzz"]);
        assert_eq!(
            select_member(&members, &target, &HashSet::new())
                .unwrap()
                .name,
            "c"
        );
    }

    #[test]
    fn denied_members_are_skipped_until_none_is_left() {
        let members = [member("a", &[], 0), member("b", &[], 1)];
        let denied: HashSet<String> = ["a".to_string()].into();
        assert_eq!(select_member(&members, &[], &denied).unwrap().name, "b");
        let denied: HashSet<String> = ["a".to_string(), "b".to_string()].into();
        assert_eq!(
            select_member(&members, &[], &denied),
            Err(PlacementError::NoSuitableMember)
        );
        assert_eq!(
            select_member(&[], &[], &denied),
            Err(PlacementError::NoMembers)
        );
    }

    #[test]
    fn rebalance_moves_until_spread_is_small() {
        let mut owned = BTreeMap::new();
        owned.insert(
            "a".to_string(),
            (0..9).map(|i| format!("t{i}")).collect::<Vec<_>>(),
        );
        owned.insert("b".to_string(), vec![]);
        owned.insert("c".to_string(), vec!["x".to_string()]);
        let moves = plan_rebalance(&owned, 2);
        let mut load: BTreeMap<&str, i64> = [("a", 9), ("b", 0), ("c", 1)].into();
        for m in &moves {
            *load.get_mut(m.from.as_str()).unwrap() -= 1;
            *load.get_mut(m.to.as_str()).unwrap() += 1;
        }
        let max = load.values().max().unwrap();
        let min = load.values().min().unwrap();
        assert!(max - min < 2, "loads after rebalance: {load:?}");
        assert_eq!(
            moves[0],
            Move {
                target: "t0".into(),
                from: "a".into(),
                to: "b".into()
            }
        );
        assert!(plan_rebalance(&load_map(&[("a", 3), ("b", 3)]), 2).is_empty());
    }

    #[test]
    fn better_match_names_a_member_matching_strictly_better() {
        let members = [
            member("a", &["site=dc1"], 0),
            member("b", &["site=dc2"], 9),
            member("c", &["site=dc2"], 0),
        ];
        let dc2 = tags(&[
            "cluster-name=c1",
            "instance-name=b",
            "__protocol=http",
            "site=dc2",
        ]);
        // b matches four tags, c and a one: moving to a or c would be undone.
        assert_eq!(better_match(&members, &dc2, "a").unwrap().name, "b");
        assert_eq!(better_match(&members, &dc2, "c").unwrap().name, "b");
        assert_eq!(better_match(&members, &dc2, "b"), None);
        // Equal matches are no reason to move back: c and b both match every tag here.
        let site = tags(&["cluster-name=c1"]);
        assert_eq!(better_match(&members, &site, "c"), None);
        // Ties among the better members go to the smaller name: every member matches the
        // cluster name, a name that is no member matches nothing.
        let members = [
            member("z", &[], 0),
            member("y", &[], 0),
            member("x", &[], 5),
        ];
        let cluster = tags(&["cluster-name=c1"]);
        assert_eq!(better_match(&members, &cluster, "gone"), Some(&members[2]));
        // Untagged targets have no affinity.
        assert_eq!(better_match(&members, &[], "z"), None);
    }

    fn load_map(loads: &[(&str, usize)]) -> BTreeMap<String, Vec<String>> {
        loads
            .iter()
            .map(|(m, n)| (m.to_string(), (0..*n).map(|i| format!("{m}{i}")).collect()))
            .collect()
    }
}
