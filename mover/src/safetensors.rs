//! safetensors headers: which dtypes a checkpoint needs.
//!
//! Layout (huggingface/safetensors, `safetensors/src/tensor.rs`): 8-byte little-endian
//! header length N, then N bytes of UTF-8 JSON: `{"__metadata__": {str: str}?, NAME:
//! {"dtype": D, "shape": [u64...], "data_offsets": [begin, end]}, ...}`, then the data
//! buffer. Offsets are relative to the buffer. Like the reference reader, this one
//! refuses N > 100,000,000, duplicate keys, offsets that are not contiguous from 0 in
//! order, a size that is not `prod(shape) * bits / 8`, and a buffer whose end is not the
//! end of the file.
//!
//! [`parse_header`] is pure (fuzzed); [`scan_checkpoint`] reads only the headers.

use crate::error::MoverError;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::Path;

/// The reference reader's header cap.
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// Tensor element types named by the safetensors spec (`Dtype` in `tensor.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[allow(non_camel_case_types)]
pub enum Dtype {
    BOOL,
    F4,
    F6_E2M3,
    F6_E3M2,
    U8,
    I8,
    F8_E5M2,
    F8_E4M3,
    F8_E8M0,
    F8_E4M3FNUZ,
    F8_E5M2FNUZ,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    C64,
    F64,
    I64,
    U64,
}

impl Dtype {
    pub const ALL: [Dtype; 22] = [
        Self::BOOL,
        Self::F4,
        Self::F6_E2M3,
        Self::F6_E3M2,
        Self::U8,
        Self::I8,
        Self::F8_E5M2,
        Self::F8_E4M3,
        Self::F8_E8M0,
        Self::F8_E4M3FNUZ,
        Self::F8_E5M2FNUZ,
        Self::I16,
        Self::U16,
        Self::F16,
        Self::BF16,
        Self::I32,
        Self::U32,
        Self::F32,
        Self::C64,
        Self::F64,
        Self::I64,
        Self::U64,
    ];

    /// The name written in safetensors headers.
    pub fn name(self) -> &'static str {
        match self {
            Self::BOOL => "BOOL",
            Self::F4 => "F4",
            Self::F6_E2M3 => "F6_E2M3",
            Self::F6_E3M2 => "F6_E3M2",
            Self::U8 => "U8",
            Self::I8 => "I8",
            Self::F8_E5M2 => "F8_E5M2",
            Self::F8_E4M3 => "F8_E4M3",
            Self::F8_E8M0 => "F8_E8M0",
            Self::F8_E4M3FNUZ => "F8_E4M3FNUZ",
            Self::F8_E5M2FNUZ => "F8_E5M2FNUZ",
            Self::I16 => "I16",
            Self::U16 => "U16",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::I32 => "I32",
            Self::U32 => "U32",
            Self::F32 => "F32",
            Self::C64 => "C64",
            Self::F64 => "F64",
            Self::I64 => "I64",
            Self::U64 => "U64",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == s)
    }

    /// Bits per element (`Dtype::bitsize` in the reference).
    pub fn bits(self) -> u64 {
        match self {
            Self::F4 => 4,
            Self::F6_E2M3 | Self::F6_E3M2 => 6,
            Self::BOOL
            | Self::U8
            | Self::I8
            | Self::F8_E5M2
            | Self::F8_E4M3
            | Self::F8_E8M0
            | Self::F8_E4M3FNUZ
            | Self::F8_E5M2FNUZ => 8,
            Self::I16 | Self::U16 | Self::F16 | Self::BF16 => 16,
            Self::I32 | Self::U32 | Self::F32 => 32,
            Self::C64 | Self::F64 | Self::I64 | Self::U64 => 64,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor of a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    /// Begin and end in the data buffer (after the header).
    pub data_offsets: (u64, u64),
}

/// A parsed, validated header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// N: the JSON's length; the data buffer starts at 8 + N.
    pub header_len: u64,
    pub metadata: BTreeMap<String, String>,
    /// In data-offset order.
    pub tensors: Vec<TensorInfo>,
}

fn hdr(msg: impl Into<String>) -> MoverError {
    MoverError::SafetensorsHeader(msg.into())
}

fn offs(msg: impl Into<String>) -> MoverError {
    MoverError::SafetensorsOffsets(msg.into())
}

/// N from the first 8 bytes, bounded by [`MAX_HEADER_LEN`] and the file's length.
pub fn header_len(first8: &[u8], file_len: u64) -> Result<u64, MoverError> {
    let arr: [u8; 8] = first8.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(|| {
        hdr(format!(
            "file has {} bytes, fewer than the 8-byte length",
            first8.len()
        ))
    })?;
    let n = u64::from_le_bytes(arr);
    if n > MAX_HEADER_LEN {
        return Err(hdr(format!("header length {n} exceeds {MAX_HEADER_LEN}")));
    }
    if n.checked_add(8).is_none_or(|end| end > file_len) {
        return Err(hdr(format!(
            "header length {n} runs past the file's {file_len} bytes"
        )));
    }
    if n < 2 {
        return Err(hdr(format!("header length {n} cannot hold a JSON object")));
    }
    Ok(n)
}

/// A JSON object whose duplicate keys are refused (serde_json would keep the last).
struct StrictObject(Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrictObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<StrictObject, A::Error> {
                let mut out: Vec<(String, serde_json::Value)> = Vec::new();
                let mut seen = std::collections::BTreeSet::new();
                while let Some((k, v)) = m.next_entry::<String, serde_json::Value>()? {
                    if !seen.insert(k.clone()) {
                        return Err(serde::de::Error::custom(format!("duplicate key {k:?}")));
                    }
                    out.push((k, v));
                }
                Ok(StrictObject(out))
            }
        }
        d.deserialize_map(V)
    }
}

fn as_u64(v: &serde_json::Value, what: &str) -> Result<u64, MoverError> {
    v.as_u64()
        .ok_or_else(|| hdr(format!("{what} is not a non-negative integer")))
}

/// Parse and validate a header. `bytes` is the start of the file (at least 8 + N bytes;
/// more is ignored); `file_len` is the whole file's length.
pub fn parse_header(bytes: &[u8], file_len: u64) -> Result<Header, MoverError> {
    let n = header_len(bytes, file_len)?;
    let end = usize::try_from(n + 8).map_err(|_| hdr("header length does not fit in memory"))?;
    let json = bytes
        .get(8..end)
        .ok_or_else(|| hdr(format!("need {end} bytes for the header, have {}", bytes.len())))?;
    let text = std::str::from_utf8(json).map_err(|_| hdr("header is not UTF-8"))?;
    if !text.starts_with('{') {
        return Err(hdr("header does not start with '{'"));
    }
    let obj: StrictObject = serde_json::from_str(text).map_err(|e| hdr(format!("JSON: {e}")))?;

    let mut metadata = BTreeMap::new();
    let mut tensors = Vec::new();
    for (name, v) in obj.0 {
        if name == "__metadata__" {
            let serde_json::Value::Object(m) = v else {
                return Err(hdr("__metadata__ is not an object"));
            };
            for (k, v) in m {
                let serde_json::Value::String(s) = v else {
                    return Err(hdr(format!("__metadata__ value of {k:?} is not a string")));
                };
                metadata.insert(k, s);
            }
            continue;
        }
        let serde_json::Value::Object(t) = v else {
            return Err(hdr(format!("tensor {name:?} is not an object")));
        };
        if let Some(k) = t
            .keys()
            .find(|k| !matches!(k.as_str(), "dtype" | "shape" | "data_offsets"))
        {
            return Err(hdr(format!("tensor {name:?} has unknown field {k:?}")));
        }
        let dtype_name = t
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| hdr(format!("tensor {name:?} has no dtype string")))?;
        let dtype = Dtype::from_name(dtype_name).ok_or_else(|| MoverError::UnknownDtype {
            tensor: name.clone(),
            dtype: dtype_name.to_owned(),
        })?;
        let shape = t
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| hdr(format!("tensor {name:?} has no shape array")))?
            .iter()
            .map(|d| as_u64(d, "shape dimension"))
            .collect::<Result<Vec<_>, _>>()?;
        let off = t
            .get("data_offsets")
            .and_then(|s| s.as_array())
            .ok_or_else(|| hdr(format!("tensor {name:?} has no data_offsets array")))?;
        let (begin, end) = match off.as_slice() {
            [b, e] => (as_u64(b, "data offset")?, as_u64(e, "data offset")?),
            _ => {
                return Err(hdr(format!(
                    "tensor {name:?}: data_offsets must have two entries"
                )))
            }
        };
        tensors.push(TensorInfo {
            name,
            dtype,
            shape,
            data_offsets: (begin, end),
        });
    }

    // Offsets: contiguous from 0 in order, each the size shape x dtype says, ending at
    // the file's end.
    tensors.sort_by(|a, b| a.data_offsets.cmp(&b.data_offsets).then(a.name.cmp(&b.name)));
    let mut cursor = 0u64;
    for t in &tensors {
        let (begin, end) = t.data_offsets;
        if begin != cursor || end < begin {
            return Err(offs(format!(
                "tensor {:?} at [{begin}, {end}) does not follow the previous end {cursor} (overlap or gap)",
                t.name
            )));
        }
        let elements = t
            .shape
            .iter()
            .try_fold(1u64, |acc, d| acc.checked_mul(*d))
            .ok_or_else(|| offs(format!("tensor {:?}: shape overflows", t.name)))?;
        let bits = elements
            .checked_mul(t.dtype.bits())
            .ok_or_else(|| offs(format!("tensor {:?}: size overflows", t.name)))?;
        if bits % 8 != 0 {
            return Err(offs(format!(
                "tensor {:?}: {elements} x {} bits is not a whole number of bytes",
                t.name, t.dtype
            )));
        }
        if end - begin != bits / 8 {
            return Err(offs(format!(
                "tensor {:?}: shape {:?} x {} needs {} bytes, offsets give {}",
                t.name,
                t.shape,
                t.dtype,
                bits / 8,
                end - begin
            )));
        }
        cursor = end;
    }
    let buffer = file_len - 8 - n;
    if cursor != buffer {
        return Err(offs(format!(
            "tensors cover {cursor} bytes, the data buffer has {buffer}"
        )));
    }
    Ok(Header {
        header_len: n,
        metadata,
        tensors,
    })
}

/// Read and parse one file's header (reads only 8 + N bytes).
pub fn read_header(path: &Path) -> Result<Header, MoverError> {
    let mut f = std::fs::File::open(path).map_err(|e| MoverError::io(path, e))?;
    let file_len = f.metadata().map_err(|e| MoverError::io(path, e))?.len();
    let mut first = [0u8; 8];
    f.read_exact(&mut first).map_err(|e| MoverError::io(path, e))?;
    let n = header_len(&first, file_len)?;
    let mut buf = Vec::new();
    buf.extend_from_slice(&first);
    f.take(n)
        .read_to_end(&mut buf)
        .map_err(|e| MoverError::io(path, e))?;
    parse_header(&buf, file_len)
}

/// What a checkpoint needs: each dtype with the tensors (`file:tensor`) that use it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requirements {
    pub dtypes: BTreeMap<Dtype, Vec<String>>,
}

impl Requirements {
    /// Add one file's tensors under its relative path.
    pub fn add(&mut self, file: &str, header: &Header) {
        for t in &header.tensors {
            self.dtypes
                .entry(t.dtype)
                .or_default()
                .push(format!("{file}:{}", t.name));
        }
    }
}

/// Read the headers of every `*.safetensors` file of a checkpoint directory (the same
/// walk as the manifest: regular files, no symlinks followed).
pub fn scan_checkpoint(dir: &Path) -> Result<Requirements, MoverError> {
    let mut req = Requirements::default();
    for rel in crate::manifest::list_files(dir)? {
        if rel.ends_with(".safetensors") {
            let header = read_header(&dir.join(&rel))?;
            req.add(&rel, &header);
        }
    }
    Ok(req)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use custody_types::FailedCheck;

    /// A real safetensors file: header JSON padded to 8 bytes like the reference writer.
    pub fn build(tensors: &[(&str, &str, &[u64], usize)], metadata: bool) -> Vec<u8> {
        let mut entries = Vec::new();
        if metadata {
            entries.push(r#""__metadata__":{"format":"pt"}"#.to_string());
        }
        let mut off = 0usize;
        for (name, dtype, shape, len) in tensors {
            entries.push(format!(
                r#""{name}":{{"dtype":"{dtype}","shape":{shape:?},"data_offsets":[{off},{}]}}"#,
                off + len
            ));
            off += len;
        }
        let mut json = format!("{{{}}}", entries.join(",")).into_bytes();
        while json.len() % 8 != 0 {
            json.push(b' ');
        }
        let mut out = (json.len() as u64).to_le_bytes().to_vec();
        out.extend(json);
        out.extend((0..off).map(|i| i as u8));
        out
    }

    fn parse(b: &[u8]) -> Result<Header, MoverError> {
        parse_header(b, b.len() as u64)
    }

    #[test]
    fn several_dtypes() {
        let f = build(
            &[
                ("model.embed.weight", "BF16", &[4, 8], 64),
                ("model.layers.0.mlp.weight", "F8_E4M3", &[8, 8], 64),
                ("model.layers.0.mlp.scale", "F8_E8M0", &[2], 2),
                ("model.layers.1.experts", "F4", &[4, 3], 6),
                ("norm", "F32", &[8], 32),
                ("mask", "BOOL", &[3], 3),
                ("scalar", "I64", &[], 8),
                ("empty", "F16", &[0, 4], 0),
            ],
            true,
        );
        let h = parse(&f).unwrap();
        assert_eq!(h.tensors.len(), 8);
        assert_eq!(h.metadata.get("format").map(String::as_str), Some("pt"));
        let mut r = Requirements::default();
        r.add("model.safetensors", &h);
        assert_eq!(
            r.dtypes.keys().copied().collect::<Vec<_>>(),
            vec![
                Dtype::BOOL,
                Dtype::F4,
                Dtype::F8_E4M3,
                Dtype::F8_E8M0,
                Dtype::F16,
                Dtype::BF16,
                Dtype::F32,
                Dtype::I64
            ]
        );
        assert_eq!(
            r.dtypes[&Dtype::F8_E4M3],
            vec!["model.safetensors:model.layers.0.mlp.weight".to_string()]
        );
        // Every spec name round-trips.
        for d in Dtype::ALL {
            assert_eq!(Dtype::from_name(d.name()), Some(d));
        }
    }

    #[test]
    fn malformed_headers() {
        let good = build(&[("a", "F32", &[2], 8), ("b", "U8", &[4], 4)], false);
        assert!(parse(&good).is_ok());
        let check = |b: &[u8]| parse(b).unwrap_err().check();

        // Length too big: past the cap, past the file.
        let mut big = good.clone();
        big[..8].copy_from_slice(&(MAX_HEADER_LEN + 1).to_le_bytes());
        assert_eq!(check(&big), "safetensors_header");
        let mut past = good.clone();
        past[..8].copy_from_slice(&(good.len() as u64).to_le_bytes());
        assert_eq!(check(&past), "safetensors_header");
        assert_eq!(check(&good[..5]), "safetensors_header");
        assert_eq!(check(&u64::MAX.to_le_bytes()), "safetensors_header");

        // Overlapping offsets.
        let overlap = {
            let json = br#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#;
            let mut f = (json.len() as u64).to_le_bytes().to_vec();
            f.extend_from_slice(json);
            f.extend([0u8; 6]);
            f
        };
        assert_eq!(check(&overlap), "safetensors_offsets");

        // Unknown dtype names the tensor and the dtype.
        let unknown = build(&[("w", "F7_E3M3", &[1], 1)], false);
        let e = parse(&unknown).unwrap_err();
        assert_eq!(e.check(), "safetensors_dtype");
        assert!(e.to_string().contains("F7_E3M3") && e.to_string().contains("\"w\""));

        // Shape x dtype does not match the offsets.
        let mismatch = build(&[("w", "F32", &[3], 8)], false);
        assert_eq!(check(&mismatch), "safetensors_offsets");
        // Data past the last tensor (buffer longer than the tensors).
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(check(&trailing), "safetensors_offsets");
        // F6 with a count that is not a whole number of bytes.
        let f6 = build(&[("w", "F6_E3M2", &[3], 2)], false);
        assert_eq!(check(&f6), "safetensors_offsets");
        // Duplicate keys, non-object, bad JSON.
        let dup = {
            let json = br#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#;
            let mut f = (json.len() as u64).to_le_bytes().to_vec();
            f.extend_from_slice(json);
            f.push(0);
            f
        };
        assert_eq!(check(&dup), "safetensors_header");
        let arr = {
            let mut f = 2u64.to_le_bytes().to_vec();
            f.extend_from_slice(b"[]");
            f
        };
        assert_eq!(check(&arr), "safetensors_header");
    }

    #[test]
    fn scan_reads_headers_of_a_directory() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("shards")).unwrap();
        std::fs::write(
            d.path().join("shards/model-00001.safetensors"),
            build(&[("l0.w", "F8_E5M2", &[4], 4)], false),
        )
        .unwrap();
        std::fs::write(
            d.path().join("model.safetensors"),
            build(&[("emb", "BF16", &[2], 4)], true),
        )
        .unwrap();
        std::fs::write(d.path().join("config.json"), b"{}").unwrap();
        let r = scan_checkpoint(d.path()).unwrap();
        assert_eq!(r.dtypes[&Dtype::BF16], vec!["model.safetensors:emb".to_string()]);
        assert_eq!(
            r.dtypes[&Dtype::F8_E5M2],
            vec!["shards/model-00001.safetensors:l0.w".to_string()]
        );
        let e = crate::chips::check(&r, crate::chips::Chip::A100).unwrap_err();
        assert!(e
            .to_string()
            .contains("A100 cannot run F8_E5M2 (shards/model-00001.safetensors:l0.w)"));
    }
}
