//! A provider's table laid over its preset, field by field, and read into a [`Policy`].
//!
//! The preset's policy is written out as a tree of values, the table's values replace the
//! preset's where the table names them (tables within tables merge, anything else replaces),
//! and the result is read back with the layers' own `Deserialize`: the file's keys are the
//! settings values' field names, with nothing in between to keep in step.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{Config, ConfigFileError, Price};
use crate::stack::Policy;
use crate::Provider;

/// Where a field is written (line and column), found from its path of keys.
pub(super) type Locate<'a> = &'a dyn Fn(&[String]) -> Option<(usize, usize)>;

/// A whole file: its policies and its prices.
pub(super) fn config(file: Value, locate: Locate<'_>) -> Result<Config, ConfigFileError> {
    let invalid = |path: Vec<String>, message: String| ConfigFileError::Invalid {
        path: None,
        field: path.join("."),
        position: locate(&path),
        message,
    };
    let Value::Object(mut file) = file else {
        return Err(invalid(
            vec![],
            "a config file is a table of `[providers.NAME]` tables".into(),
        ));
    };
    let providers = file.remove("providers").unwrap_or_default();
    let prices = file.remove("prices").unwrap_or_default();
    let fallback = file.remove("fallback").unwrap_or_default();
    let serve = file.remove("serve").filter(|table| !table.is_null());
    if serve.as_ref().is_some_and(|table| !table.is_object()) {
        return Err(invalid(vec!["serve".into()], "must be a table".into()));
    }
    if let Some(key) = file.keys().next() {
        return Err(invalid(
            vec![key.clone()],
            "unknown key: a config file holds `[providers.NAME]`, `[prices.MODEL]`, `[[fallback]]` and `[serve]` tables"
                .into(),
        ));
    }
    let prices = match prices {
        Value::Null => BTreeMap::new(),
        prices => serde_path_to_error::deserialize::<_, BTreeMap<String, Price>>(prices).map_err(
            |error| {
                let mut path = vec!["prices".to_owned()];
                path.extend(error.path().iter().filter_map(|segment| match segment {
                    serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                    _ => None,
                }));
                invalid(path, error.into_inner().to_string())
            },
        )?,
    };
    let fallback: Vec<super::FallbackEntry> = match fallback {
        Value::Null => Vec::new(),
        fallback => serde_path_to_error::deserialize(fallback).map_err(|error| {
            let mut path = vec!["fallback".to_owned()];
            path.extend(error.path().iter().filter_map(|segment| match segment {
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                _ => None,
            }));
            invalid(path, error.into_inner().to_string())
        })?,
    };
    for (model, price) in &prices {
        if let Err(message) = price.check() {
            return Err(invalid(vec!["prices".into(), model.clone()], message));
        }
    }
    let providers = match providers {
        Value::Null => Map::new(),
        Value::Object(providers) => providers,
        _ => {
            return Err(invalid(
                vec!["providers".into()],
                "must be a table of providers".into(),
            ))
        }
    };
    let mut policies = BTreeMap::new();
    for (name, table) in providers {
        let at = |rest: &[String]| {
            let mut path = vec!["providers".to_owned(), name.clone()];
            path.extend_from_slice(rest);
            path
        };
        let policy = policy(table).map_err(|(rest, message)| invalid(at(&rest), message))?;
        policies.insert(name, policy);
    }
    for (i, entry) in fallback.iter().enumerate() {
        if let Some(name) = entry
            .provider
            .as_ref()
            .filter(|n| !policies.contains_key(*n))
        {
            return Err(invalid(
                vec!["fallback".into(), i.to_string(), "provider".into()],
                format!("no provider table `{name}` in the file"),
            ));
        }
    }
    Ok(Config {
        providers: policies,
        prices,
        fallback,
        serve,
    })
}

/// One provider's policy: its table over its preset, checked. An error gives the path of the
/// field within the table, and what was wrong.
fn policy(table: Value) -> Result<Policy, (Vec<String>, String)> {
    let Value::Object(table) = table else {
        return Err((vec![], "must be a table of settings".into()));
    };
    let preset = match table.get("preset") {
        None => Provider::OpenAiCompatible,
        Some(name) => serde_json::from_value(name.clone())
            .map_err(|error| (vec!["preset".to_owned()], error.to_string()))?,
    };
    let mut merged = serde_json::to_value(Policy::preset(preset))
        .map_err(|error| (vec![], format!("cannot write out the preset: {error}")))?;
    lay_over(&mut merged, Value::Object(table));
    let policy: Policy = serde_path_to_error::deserialize(merged).map_err(|error| {
        let path = error
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                _ => None,
            })
            .collect();
        (path, error.into_inner().to_string())
    })?;
    policy.validate().map_err(|error| {
        let path = error.field().split('.').map(str::to_owned).collect();
        (path, error.message().to_owned())
    })?;
    Ok(policy)
}

/// Replaces `base`'s values by `over`'s where `over` has them; tables merge key by key.
fn lay_over(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (key, value) in over {
                lay_over(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (base, over) => *base = over,
    }
}

/// The line and column (from 1) where the value at `path` is written in TOML `text`, or the
/// deepest table on the way that is.
pub(super) fn toml_position(text: &str, path: &[String]) -> Option<(usize, usize)> {
    let root = toml::de::DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    let mut offset = None;
    for key in path {
        let Some(value) = table.get(key.as_str()) else {
            break;
        };
        offset = Some(value.span().start);
        match value.get_ref() {
            toml::de::DeValue::Table(inner) => table = inner,
            _ => break,
        }
    }
    let offset = offset?;
    let before = text.get(..offset)?;
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |n| n + 1) + 1;
    Some((line, column))
}
