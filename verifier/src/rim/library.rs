//! The operator's library of NVIDIA-signed RIMs: one directory of SWID tags (driver and
//! VBIOS), from NVIDIA's RIM service or a vendor bundle, fetched out of band. A GPU's
//! round uses the RIMs for its product and the driver and VBIOS versions its report names
//! (see [`crate::nvgpu::NvgpuEvidence::library`]). The XML signature is verified once, at
//! load; a round checks the signer chain's validity window at its own time, so a RIM
//! whose signer expired since loading is refused then (`rim_cert_validity`).
//!
//! Loading checks every file once: it must parse, chain to a pinned RIM root and carry a
//! valid signature (`rim_format`, `rim_cert_chain`, `rim_signature`), naming the file. A
//! signer outside its validity at load time is kept (it is refused by name in the rounds
//! that select it), so a verifier restart does not fail on an old RIM left in the
//! directory. Two RIMs for the same kind, product and version are refused: which one
//! holds would be a matter of file order.

use super::{parse_swid, verify_rim, Rim, RimError, RimKind};
use crate::check::FailedCheck;
use crate::check::UnixTime;
use crate::x509::{ChainError, TrustAnchor};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Largest RIM file accepted (NVIDIA's are tens of KiB).
pub const MAX_RIM_BYTES: u64 = 4 << 20;
/// Most RIM files in one library.
pub const MAX_RIMS: usize = 4096;

/// A library the verifier refuses to start with.
#[derive(Debug, Error)]
pub enum RimLibraryError {
    #[error("RIM library {dir}: {reason}")]
    Dir { dir: String, reason: String },
    #[error("RIM {file}: {reason}")]
    File { file: String, reason: String },
    #[error("RIM {file}: {check}: {source}")]
    Rim {
        file: String,
        check: &'static str,
        source: Box<RimError>,
    },
    #[error("RIMs {first} and {second} are both the {kind:?} RIM of {product} {version}")]
    Duplicate {
        first: String,
        second: String,
        kind: RimKind,
        product: String,
        version: String,
    },
}

/// One RIM of the library: what selects it, and its exact bytes.
#[derive(Debug, Clone)]
pub struct LibraryRim {
    pub file: PathBuf,
    pub kind: RimKind,
    /// `Meta@product`, e.g. `GH100`.
    pub product: String,
    /// `Meta@colloquialVersion`, e.g. `550.144.03` or `96.00.5E.00.01`.
    pub version: String,
    pub xml: Vec<u8>,
    /// The RIM as verified at load; `None` when its signer was outside its validity then
    /// (it is verified in full, and refused, by the rounds that select it).
    verified: Option<Rim>,
    anchors: Vec<TrustAnchor>,
}

impl LibraryRim {
    /// The RIM as a round at `at` may use it: the one verified at load if `at` is inside
    /// its signer chain's window (`rim_cert_validity` otherwise), else verified now.
    pub fn verified_at(&self, at: UnixTime) -> Result<Rim, RimError> {
        let Some(r) = &self.verified else {
            return verify_rim(&self.xml, &self.anchors, at);
        };
        let subject = || format!("signer chain of {}", r.signer);
        if at.0 < r.valid_from {
            return Err(RimError::Chain(ChainError::NotYetValid {
                index: 0,
                subject: subject(),
                not_before: r.valid_from,
                at: at.0,
            }));
        }
        if at.0 > r.valid_until {
            return Err(RimError::Chain(ChainError::Expired {
                index: 0,
                subject: subject(),
                not_after: r.valid_until,
                at: at.0,
            }));
        }
        Ok(r.clone())
    }
}

/// The product a device certificate's model names: its first word (`GH100` of
/// `GH100 A01 GSP FMC LF`).
pub fn product_of(hwmodel: &str) -> &str {
    hwmodel.split_whitespace().next().unwrap_or_default()
}

/// The RIMs one verifier appraises GPUs against.
#[derive(Debug, Clone, Default)]
pub struct RimLibrary {
    rims: Vec<LibraryRim>,
}

impl RimLibrary {
    /// Every `*.xml` file of `dir` (not recursive), checked at `at` against `anchors`.
    pub fn load_dir(dir: &Path, anchors: &[TrustAnchor], at: UnixTime) -> Result<Self, RimLibraryError> {
        let dir_err = |reason: String| RimLibraryError::Dir {
            dir: dir.display().to_string(),
            reason,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| dir_err(e.to_string()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("xml")))
            .collect();
        if files.len() > MAX_RIMS {
            return Err(dir_err(format!("{} RIM files, at most {MAX_RIMS}", files.len())));
        }
        files.sort();
        let mut lib = Self::default();
        for file in files {
            let name = file.display().to_string();
            let file_err = |reason: String| RimLibraryError::File {
                file: name.clone(),
                reason,
            };
            let len = std::fs::metadata(&file)
                .map_err(|e| file_err(e.to_string()))?
                .len();
            if len > MAX_RIM_BYTES {
                return Err(file_err(format!("{len} bytes, at most {MAX_RIM_BYTES}")));
            }
            let xml = std::fs::read(&file).map_err(|e| file_err(e.to_string()))?;
            lib.add(file, xml, anchors, at)?;
        }
        Ok(lib)
    }

    /// Add one RIM (its bytes as read from `file`), checked as [`RimLibrary::load_dir`] does.
    pub fn add(
        &mut self,
        file: PathBuf,
        xml: Vec<u8>,
        anchors: &[TrustAnchor],
        at: UnixTime,
    ) -> Result<(), RimLibraryError> {
        let rim_err = |source: RimError| RimLibraryError::Rim {
            file: file.display().to_string(),
            check: source.check(),
            source: Box::new(source),
        };
        let tag = parse_swid(&xml).map_err(rim_err)?;
        let verified = match verify_rim(&xml, anchors, at) {
            Ok(r) => Some(r),
            // Expired (or not yet valid) signers stay: the rounds that select them say so.
            Err(e) if e.check() == "rim_cert_validity" => None,
            Err(e) => return Err(rim_err(e)),
        };
        if let Some(other) = self.rims.iter().find(|r| {
            r.kind == tag.kind
                && r.product.eq_ignore_ascii_case(&tag.product)
                && r.version.eq_ignore_ascii_case(&tag.version)
        }) {
            return Err(RimLibraryError::Duplicate {
                first: other.file.display().to_string(),
                second: file.display().to_string(),
                kind: tag.kind,
                product: tag.product,
                version: tag.version,
            });
        }
        self.rims.push(LibraryRim {
            file,
            kind: tag.kind,
            product: tag.product,
            version: tag.version,
            xml,
            verified,
            anchors: anchors.to_vec(),
        });
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.rims.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rims.is_empty()
    }

    pub fn rims(&self) -> &[LibraryRim] {
        &self.rims
    }

    /// The RIM of `kind` for a GPU whose device certificate names `hwmodel` (e.g.
    /// `GH100 A01 GSP FMC LF`: the product is its first word) at `version`, compared
    /// case-insensitively as NVIDIA's verifier does.
    pub fn select(&self, kind: RimKind, hwmodel: &str, version: &str) -> Option<&LibraryRim> {
        let product = product_of(hwmodel);
        self.rims.iter().find(|r| {
            r.kind == kind
                && r.product.eq_ignore_ascii_case(product)
                && r.version.trim().eq_ignore_ascii_case(version.trim())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nvgpu::RIM_ROOT_PEM;

    const TV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/nvidia/rims");
    /// 2025-06-01: inside the validity of the good driver and VBIOS RIM signers.
    const AT: UnixTime = UnixTime(1_748_736_000);
    const DRIVER: &str = "NV_GPU_DRIVER_GH100_550.144.03.xml";
    const VBIOS: &str = "NV_GPU_VBIOS_1010_0200_882_96005E0001_measurement_mismatch.xml";

    fn roots() -> Vec<TrustAnchor> {
        TrustAnchor::from_pem_or_der(RIM_ROOT_PEM).unwrap()
    }

    fn dir_with(files: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for f in files {
            std::fs::copy(format!("{TV}/{f}"), d.path().join(f)).unwrap();
        }
        // Not a RIM: ignored by extension.
        std::fs::write(d.path().join("README.md"), "notes").unwrap();
        d
    }

    #[test]
    fn loads_and_selects_by_kind_product_and_version() {
        let d = dir_with(&[DRIVER, VBIOS]);
        let lib = RimLibrary::load_dir(d.path(), &roots(), AT).unwrap();
        assert_eq!(lib.len(), 2);
        let hw = "GH100 A01 GSP FMC LF";
        let drv = lib.select(RimKind::Driver, hw, "550.144.03").unwrap();
        assert_eq!((drv.kind, drv.product.as_str()), (RimKind::Driver, "GH100"));
        // VBIOS versions compare case-insensitively.
        assert!(lib.select(RimKind::Vbios, hw, "96.00.5e.00.01").is_some());
        assert!(
            lib.select(RimKind::Driver, hw, "535.86.09").is_none(),
            "other version"
        );
        assert!(
            lib.select(RimKind::Vbios, hw, "550.144.03").is_none(),
            "other kind"
        );
        assert!(
            lib.select(RimKind::Driver, "GB100 A01 FSP BROM", "550.144.03")
                .is_none(),
            "other product"
        );
    }

    #[test]
    fn refuses_bad_rims_by_file_and_check() {
        for (file, check) in [
            ("incorrect_signature_driver_rim.xml", "rim_signature"),
            ("incorrect_cert_chain_driver_rim.xml", "rim_cert_chain"),
            // Edited after signing; its signer is valid at AT.
            (
                "NV_GPU_DRIVER_GH100_535.86.09_measurement_mismatch.xml",
                "rim_signature",
            ),
        ] {
            let d = dir_with(&[DRIVER, file]);
            let e = RimLibrary::load_dir(d.path(), &roots(), AT).unwrap_err();
            match &e {
                RimLibraryError::Rim {
                    file: f, check: c, ..
                } => {
                    assert!(f.ends_with(file), "{e}");
                    assert_eq!(*c, check, "{e}");
                }
                other => panic!("{file}: {other}"),
            }
        }
        // Not XML at all.
        let d = dir_with(&[]);
        std::fs::write(d.path().join("junk.xml"), b"\x00\x01not xml").unwrap();
        let e = RimLibrary::load_dir(d.path(), &roots(), AT).unwrap_err();
        assert!(
            matches!(
                &e,
                RimLibraryError::Rim {
                    check: "rim_format",
                    ..
                }
            ),
            "{e}"
        );
        // No such directory.
        let e = RimLibrary::load_dir(Path::new("/nonexistent/rims"), &roots(), AT).unwrap_err();
        assert!(matches!(e, RimLibraryError::Dir { .. }), "{e}");
    }

    #[test]
    fn keeps_an_expired_rim_for_the_rounds_to_refuse() {
        // The 570.124.03 signer was valid for one day in 2025-01; at AT it has expired.
        let d = dir_with(&[DRIVER, "NV_GPU_DRIVER_GH100_570.124.03_expired.xml"]);
        let lib = RimLibrary::load_dir(d.path(), &roots(), AT).unwrap();
        assert_eq!(lib.len(), 2);
        assert!(lib.select(RimKind::Driver, "GH100", "570.124.03").is_some());
    }

    #[test]
    fn a_round_checks_the_signer_window_without_verifying_again() {
        let d = dir_with(&[DRIVER]);
        let lib = RimLibrary::load_dir(d.path(), &roots(), AT).unwrap();
        let r = lib.select(RimKind::Driver, "GH100", "550.144.03").unwrap();
        assert_eq!(r.verified_at(AT).unwrap().version, "550.144.03");
        for at in [UnixTime(1_577_836_800), UnixTime(1_893_456_000)] {
            assert_eq!(r.verified_at(at).unwrap_err().check(), "rim_cert_validity");
        }
    }

    #[test]
    fn refuses_two_rims_for_one_kind_product_and_version() {
        let d = dir_with(&[DRIVER]);
        std::fs::copy(format!("{TV}/{DRIVER}"), d.path().join("copy-of-driver.xml")).unwrap();
        let e = RimLibrary::load_dir(d.path(), &roots(), AT).unwrap_err();
        assert!(matches!(e, RimLibraryError::Duplicate { .. }), "{e}");
        assert!(e.to_string().contains("550.144.03"), "{e}");
    }
}
