//! Which element types each accelerator runs natively: the one table the move check uses.
//!
//! "Natively" means the tensor cores / matrix units compute in that format; a checkpoint
//! whose tensors are stored in a format the destination lacks would need an offline
//! conversion (and for FP8 a re-calibration of scales), which is a different job.
//! Integers, BOOL, F32, F64 and C64 (pairs of F32) run everywhere.
//!
//! Sources:
//! - V100 (Volta): NVIDIA Tesla V100 GPU Architecture whitepaper (2017): tensor cores in
//!   FP16 only; no BF16, no FP8.
//! - A100 (Ampere): NVIDIA A100 Tensor Core GPU Architecture whitepaper (2020): FP16, BF16,
//!   TF32, INT8/INT4; no FP8.
//! - H100/H200 (Hopper, GH100): NVIDIA H100 Tensor Core GPU Architecture whitepaper (2022):
//!   FP8 in the OCP/NVIDIA E4M3 and E5M2 formats (`float8_e4m3fn`, `float8_e5m2`), FP16,
//!   BF16, TF32; no FNUZ variants, no FP6/FP4/MX.
//! - B200 (Blackwell): NVIDIA Blackwell Architecture technical brief (2024): adds FP6 and FP4
//!   and the OCP Microscaling formats (MXFP8/MXFP6/MXFP4) whose block scales are E8M0.
//! - MI300X (CDNA 3): AMD CDNA 3 ISA reference guide / MI300 whitepaper (2023): FP8 as the
//!   FNUZ variants (E4M3FNUZ, E5M2FNUZ: bias shifted by one, no infinities or negative
//!   zero, a different range from OCP E4M3/E5M2); no OCP FP8, no FP6/FP4.
//! - MI355X (CDNA 4): AMD CDNA 4 architecture whitepaper (2025): OCP FP8 (E4M3/E5M2), MXFP6,
//!   MXFP4 with E8M0 scales; the FNUZ encodings of CDNA 3 are not listed, so they are not
//!   claimed here.

use crate::safetensors::{Dtype, Requirements};
use std::fmt;

/// A chip family the table knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Chip {
    V100,
    A100,
    H100,
    H200,
    B200,
    MI300X,
    MI355X,
}

/// Types every chip runs (or trivially emulates at full speed on vector units).
const COMMON: &[Dtype] = &[
    Dtype::BOOL,
    Dtype::U8,
    Dtype::I8,
    Dtype::I16,
    Dtype::U16,
    Dtype::I32,
    Dtype::U32,
    Dtype::I64,
    Dtype::U64,
    Dtype::F16,
    Dtype::F32,
    Dtype::F64,
    Dtype::C64,
];

impl Chip {
    pub const ALL: [Chip; 7] = [
        Self::V100,
        Self::A100,
        Self::H100,
        Self::H200,
        Self::B200,
        Self::MI300X,
        Self::MI355X,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::V100 => "V100",
            Self::A100 => "A100",
            Self::H100 => "H100",
            Self::H200 => "H200",
            Self::B200 => "B200",
            Self::MI300X => "MI300X",
            Self::MI355X => "MI355X",
        }
    }

    /// The formats beyond [`COMMON`] this chip runs natively (sources in the module doc).
    fn extra(self) -> &'static [Dtype] {
        use Dtype::*;
        match self {
            Self::V100 => &[],
            Self::A100 => &[BF16],
            Self::H100 | Self::H200 => &[BF16, F8_E4M3, F8_E5M2],
            Self::B200 => &[BF16, F8_E4M3, F8_E5M2, F8_E8M0, F6_E2M3, F6_E3M2, F4],
            Self::MI300X => &[BF16, F8_E4M3FNUZ, F8_E5M2FNUZ],
            Self::MI355X => &[BF16, F8_E4M3, F8_E5M2, F8_E8M0, F6_E2M3, F6_E3M2, F4],
        }
    }

    pub fn supports(self, d: Dtype) -> bool {
        COMMON.contains(&d) || self.extra().contains(&d)
    }

    /// Recognise a chip from an NVML/ROCm model string ("NVIDIA H100 80GB HBM3",
    /// "Tesla V100-SXM2-16GB", "AMD Instinct MI300X") or an attested hardware model
    /// ("GH100 A01 GSP FMC LF" from the NVIDIA device certificate). Whole tokens only, so
    /// "H1000" is not an H100. GH100 is the die of both H100 and H200 (same formats).
    pub fn from_model(model: &str) -> Option<Chip> {
        let upper = model.to_ascii_uppercase();
        let tokens: Vec<&str> = upper
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|t| !t.is_empty())
            .collect();
        let has = |names: &[&str]| tokens.iter().any(|t| names.contains(t));
        // Most specific first: GH200 carries an H100- or H200-class GPU.
        if has(&["H200", "GH200"]) {
            Some(Self::H200)
        } else if has(&["H100", "H800", "GH100"]) {
            Some(Self::H100)
        } else if has(&["B200", "B100", "GB200", "GB100"]) {
            Some(Self::B200)
        } else if has(&["A100", "A800", "GA100"]) {
            Some(Self::A100)
        } else if has(&["V100", "GV100"]) {
            Some(Self::V100)
        } else if has(&["MI355X", "MI350X"]) {
            Some(Self::MI355X)
        } else if has(&["MI300X", "MI300A", "MI325X"]) {
            Some(Self::MI300X)
        } else {
            None
        }
    }
}

impl fmt::Display for Chip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How many tensor names an error lists per dtype before "... N more".
pub const NAMES_SHOWN: usize = 3;

/// One dtype the destination cannot run, with the tensors that use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported {
    pub dtype: Dtype,
    pub tensors: Vec<String>,
}

/// The destination cannot run some of the checkpoint's tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChipMismatch {
    pub chip: Chip,
    pub unsupported: Vec<Unsupported>,
}

fn hint(chip: Chip, d: Dtype) -> &'static str {
    match (chip, d) {
        (Chip::MI300X, Dtype::F8_E4M3 | Dtype::F8_E5M2) => {
            " [MI300X runs FP8 only as the FNUZ variants, which have a different range]"
        }
        (Chip::H100 | Chip::H200 | Chip::B200 | Chip::MI355X, Dtype::F8_E4M3FNUZ | Dtype::F8_E5M2FNUZ) => {
            " [FNUZ FP8 is AMD CDNA 3's encoding, not OCP FP8]"
        }
        _ => "",
    }
}

impl fmt::Display for ChipMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, u) in self.unsupported.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            let shown: Vec<&str> = u.tensors.iter().take(NAMES_SHOWN).map(String::as_str).collect();
            write!(
                f,
                "destination GPU {} cannot run {} ({}",
                self.chip,
                u.dtype,
                shown.join(", ")
            )?;
            let more = u.tensors.len().saturating_sub(NAMES_SHOWN);
            if more > 0 {
                write!(f, ", ... {more} more")?;
            }
            write!(f, "){}", hint(self.chip, u.dtype))?;
        }
        Ok(())
    }
}

impl std::error::Error for ChipMismatch {}

/// Can `chip` run every dtype the checkpoint needs? The error names every dtype it cannot.
pub fn check(req: &Requirements, chip: Chip) -> Result<(), ChipMismatch> {
    let unsupported: Vec<Unsupported> = req
        .dtypes
        .iter()
        .filter(|(d, _)| !chip.supports(**d))
        .map(|(d, t)| Unsupported {
            dtype: *d,
            tensors: t.clone(),
        })
        .collect();
    if unsupported.is_empty() {
        Ok(())
    } else {
        Err(ChipMismatch { chip, unsupported })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(d: Dtype, n: usize) -> Requirements {
        let mut r = Requirements::default();
        r.dtypes.insert(
            d,
            (0..n)
                .map(|i| format!("model.safetensors:model.layers.{i}.mlp.weight"))
                .collect(),
        );
        r.dtypes.insert(Dtype::F32, vec!["model.safetensors:norm".into()]);
        r
    }

    #[test]
    fn recognises_model_strings() {
        assert_eq!(Chip::from_model("NVIDIA H100 80GB HBM3"), Some(Chip::H100));
        assert_eq!(Chip::from_model("NVIDIA H100 PCIe"), Some(Chip::H100));
        assert_eq!(Chip::from_model("NVIDIA H200"), Some(Chip::H200));
        assert_eq!(Chip::from_model("NVIDIA GH200 480GB"), Some(Chip::H200));
        assert_eq!(Chip::from_model("GH100 A01 GSP FMC LF"), Some(Chip::H100));
        assert_eq!(Chip::from_model("NVIDIA A100-SXM4-80GB"), Some(Chip::A100));
        assert_eq!(Chip::from_model("Tesla V100-SXM2-16GB"), Some(Chip::V100));
        assert_eq!(Chip::from_model("NVIDIA B200"), Some(Chip::B200));
        assert_eq!(Chip::from_model("AMD Instinct MI300X"), Some(Chip::MI300X));
        assert_eq!(Chip::from_model("AMD Instinct MI355X"), Some(Chip::MI355X));
        assert_eq!(Chip::from_model("NVIDIA H1000"), None);
        assert_eq!(Chip::from_model("NVIDIA GeForce RTX 4090"), None);
    }

    #[test]
    fn fp8_to_a100_refused_with_names() {
        let e = check(&req(Dtype::F8_E4M3, 15), Chip::A100).unwrap_err();
        let msg = e.to_string();
        assert_eq!(
            msg,
            "destination GPU A100 cannot run F8_E4M3 (model.safetensors:model.layers.0.mlp.weight, \
             model.safetensors:model.layers.1.mlp.weight, model.safetensors:model.layers.2.mlp.weight, \
             ... 12 more)"
        );
        assert_eq!(e.unsupported.len(), 1);
        assert_eq!(e.unsupported[0].tensors.len(), 15);
    }

    #[test]
    fn bf16_to_v100_refused() {
        let e = check(&req(Dtype::BF16, 1), Chip::V100).unwrap_err();
        assert!(e.to_string().contains("V100 cannot run BF16"));
        assert!(check(&req(Dtype::F16, 1), Chip::V100).is_ok());
    }

    #[test]
    fn ocp_fp8_to_mi300x_refused_naming_fnuz() {
        let e = check(&req(Dtype::F8_E5M2, 2), Chip::MI300X).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("MI300X cannot run F8_E5M2"), "{msg}");
        assert!(msg.contains("FNUZ"), "{msg}");
        assert!(check(&req(Dtype::F8_E4M3FNUZ, 2), Chip::MI300X).is_ok());
        // And the other way round.
        let e = check(&req(Dtype::F8_E4M3FNUZ, 1), Chip::H100).unwrap_err();
        assert!(e.to_string().contains("FNUZ"));
    }

    #[test]
    fn fp8_to_hopper_ok_fp4_needs_blackwell() {
        assert!(check(&req(Dtype::F8_E4M3, 3), Chip::H100).is_ok());
        assert!(check(&req(Dtype::F8_E5M2, 3), Chip::H200).is_ok());
        assert!(check(&req(Dtype::F4, 3), Chip::H100).is_err());
        assert!(check(&req(Dtype::F4, 3), Chip::B200).is_ok());
        assert!(check(&req(Dtype::F8_E8M0, 3), Chip::MI355X).is_ok());
    }

    #[test]
    fn every_incompatible_dtype_is_named() {
        let mut r = req(Dtype::F8_E4M3, 1);
        r.dtypes.insert(Dtype::BF16, vec!["a:b".into()]);
        let e = check(&r, Chip::V100).unwrap_err();
        let names: Vec<Dtype> = e.unsupported.iter().map(|u| u.dtype).collect();
        assert_eq!(names, vec![Dtype::F8_E4M3, Dtype::BF16]);
    }
}
