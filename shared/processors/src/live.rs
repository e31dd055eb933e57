//! Chains rebuilt while they run: SIGHUP with changed processor definitions swaps every
//! registered chain for one compiled from the new `processors` section. The swap happens
//! under each chain's own mutex (the one its output or input already takes per batch), so
//! the hot path pays nothing extra; all new chains are compiled before any is swapped, so a
//! bad definition leaves every chain as it was. Stateful processors start over (as after a
//! restart). The `event-processors` lists themselves belong to the outputs and inputs and
//! change only with a restart.

use crate::{Chain, ProcessorError, Processors};
use serde_json::Value;
use std::sync::{Arc, Mutex, Weak};

/// A chain shared by the workers of one output or input, swappable by [`ChainSet::reload`].
pub type LiveChain = Arc<Mutex<Chain>>;

struct Slot {
    /// `outputs.<name>` or `inputs.<name>`, for errors.
    owner: String,
    names: Vec<String>,
    chain: Weak<Mutex<Chain>>,
}

/// Every live chain of a process (cheap to clone; clones share the set).
#[derive(Clone, Default)]
pub struct ChainSet {
    slots: Arc<Mutex<Vec<Slot>>>,
}

impl std::fmt::Debug for ChainSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        f.debug_list()
            .entries(slots.iter().map(|s| s.owner.as_str()))
            .finish()
    }
}

impl ChainSet {
    /// Adds `chain`, built from `owner`'s `event-processors` list `names`.
    pub fn register(&self, owner: &str, names: &[String], chain: &LiveChain) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.retain(|slot| slot.chain.strong_count() > 0);
        slots.push(Slot {
            owner: owner.to_string(),
            names: names.to_vec(),
            chain: Arc::downgrade(chain),
        });
    }

    /// Compiles `raw` (a `processors` section) and, when every registered chain builds,
    /// swaps them all; returns how many were swapped. An error names the processor, the key
    /// and the lists that use it, and changes nothing.
    pub fn reload(&self, raw: &Value) -> Result<usize, ProcessorError> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let live: Vec<(&Slot, LiveChain)> = slots
            .iter()
            .filter_map(|slot| slot.chain.upgrade().map(|chain| (slot, chain)))
            .collect();
        let users: Vec<(String, Vec<String>)> = live
            .iter()
            .map(|(slot, _)| (slot.owner.clone(), slot.names.clone()))
            .collect();
        let processors = Processors::from_config_for(raw, &users)?;
        let fresh = live
            .iter()
            .map(|(slot, _)| processors.chain_for(&slot.owner, &slot.names))
            .collect::<Result<Vec<Chain>, _>>()?;
        for ((_, chain), new) in live.iter().zip(fresh) {
            *chain.lock().unwrap_or_else(|p| p.into_inner()) = new;
        }
        Ok(live.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Record;
    use serde_json::json;

    #[test]
    fn a_reload_swaps_every_chain_or_none() {
        let raw = json!({"tag": {"event-add-tag": {"value-names": [".*"], "add": {"site": "a"}}}});
        let processors = Processors::from_config(&raw).unwrap();
        let chain: LiveChain = Arc::new(Mutex::new(
            processors.chain_for("outputs.o", &["tag"]).unwrap(),
        ));
        let set = ChainSet::default();
        set.register("outputs.o", &["tag".to_string()], &chain);
        let site = |chain: &LiveChain| {
            let mut record = Record::default();
            record.values.insert("v", crate::Val::from_u64(1));
            let mut records = vec![record];
            chain.lock().unwrap().apply_records(&mut records);
            records[0].tags.get("site").map(|v| v.to_string())
        };
        assert_eq!(site(&chain).as_deref(), Some("a"));

        let changed =
            json!({"tag": {"event-add-tag": {"value-names": [".*"], "add": {"site": "b"}}}});
        assert_eq!(set.reload(&changed).unwrap(), 1);
        assert_eq!(site(&chain).as_deref(), Some("b"));

        // A bad definition, or a list naming a processor that is gone: nothing changes.
        let bad = json!({"tag": {"event-strings": {"value-names": ["(["]}}});
        assert!(set.reload(&bad).is_err());
        let gone = json!({"other": {"event-add-tag": {"add": {"x": "y"}}}});
        let error = set.reload(&gone).unwrap_err().to_string();
        assert!(error.contains("tag"), "{error}");
        assert_eq!(site(&chain).as_deref(), Some("b"));

        // Dropped chains are forgotten.
        drop(chain);
        assert_eq!(set.reload(&changed).unwrap(), 0);
    }
}
