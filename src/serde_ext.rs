//! Serde helpers the configuration sections share: lists written as TOML arrays or as the
//! comma-separated strings an environment variable can hold, and lists of durations.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

/// Accepts `["5s", "5m"]` or `"5s,5m"` (as set from the environment).
pub fn durations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    let items: Vec<String> = comma_list(d)?;
    items
        .iter()
        .map(|s| {
            humantime::parse_duration(s).map_err(|e| {
                serde::de::Error::custom(format!(
                    "{s:?} is not a duration ({e}); write e.g. 5s, 5m, 2h"
                ))
            })
        })
        .collect()
}

pub fn ser_durations<S: serde::Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
    let items: Vec<String> = v
        .iter()
        .map(|d| humantime::format_duration(*d).to_string())
        .collect();
    items.serialize(s)
}

/// Accepts a TOML array or a comma-separated string.
pub fn comma_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<String>),
        One(String),
    }
    let raw = match Either::deserialize(d)? {
        Either::List(v) => v,
        Either::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    };
    raw.iter()
        .map(|s| {
            s.parse::<T>()
                .map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
        })
        .collect()
}

/// Accepts a TOML table of strings or `"key=value,key=value"` (as set from the
/// environment).
pub fn string_map<'de, D>(d: D) -> Result<std::collections::BTreeMap<String, String>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Map(std::collections::BTreeMap<String, String>),
        Text(String),
    }
    match Either::deserialize(d)? {
        Either::Map(m) => Ok(m),
        Either::Text(s) => s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() && !v.trim().is_empty() => {
                    Ok((k.trim().to_string(), v.trim().to_string()))
                }
                _ => Err(serde::de::Error::custom(format!(
                    "{p:?} is not claim=role (e.g. isAdmin=admin)"
                ))),
            })
            .collect(),
    }
}
