//! The configuration loader on arbitrary text: it returns a configuration or an error,
//! never panics. The first byte picks the format (YAML, JSON or TOML), the rest is the text.
#![no_main]

use gnomon_config::{load_config_with_env, ConfigFormat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let format = match selector % 3 {
        0 => ConfigFormat::Yaml,
        1 => ConfigFormat::Json,
        _ => ConfigFormat::Toml,
    };
    // No environment: the outcome must depend on the input only.
    if let Ok(config) = load_config_with_env(text, format, &[]) {
        let _ = config.check_references();
        for target in config.targets.values() {
            let _ = config.subscriptions_for(target);
        }
    }
});
