//! Fixture access shared by the policy tests.
#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing, dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn load(name: &str) -> Value {
    let text = std::fs::read_to_string(fixtures().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Split "/a/b/c" into the parent pointer "/a/b" and the key "c".
fn split(ptr: &str) -> (&str, String) {
    let i = ptr.rfind('/').unwrap();
    (&ptr[..i], ptr[i + 1..].replace("~1", "/").replace("~0", "~"))
}

pub fn set(doc: &mut Value, ptr: &str, v: Value) {
    let (parent, key) = split(ptr);
    match doc.pointer_mut(parent).unwrap_or_else(|| panic!("no {parent}")) {
        Value::Object(o) => {
            o.insert(key, v);
        }
        Value::Array(a) => a[key.parse::<usize>().unwrap()] = v,
        other => panic!("{parent} is {other}"),
    }
}

pub fn remove(doc: &mut Value, ptr: &str) {
    let (parent, key) = split(ptr);
    let o = doc.pointer_mut(parent).unwrap().as_object_mut().unwrap();
    assert!(o.remove(&key).is_some(), "nothing at {ptr}");
}

/// A case's input: its base document with the case's `set` and `remove` edits.
pub fn case_input(case: &Value) -> Value {
    let mut input = load(case["base"].as_str().unwrap());
    if let Some(edits) = case.get("set").and_then(Value::as_object) {
        for (ptr, v) in edits {
            set(&mut input, ptr, v.clone());
        }
    }
    if let Some(ptrs) = case.get("remove").and_then(Value::as_array) {
        for ptr in ptrs {
            remove(&mut input, ptr.as_str().unwrap());
        }
    }
    input
}
