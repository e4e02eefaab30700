//! `custody registry keygen|create|edit|sign|verify|show|derive`: the operator's signed
//! registry of legal entities, sites and hardware (see docs/registry.md).
//!
//! `verify` and `derive` follow the CLI contract: JSON on stdout, exit 0 verified, 1 the
//! registry was refused (the failed check named on stderr), 2 bad usage or an unreadable
//! file.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use custody_registry::{
    AuthorityKey, Country, Entity, Hardware, HardwareId, Holding, Registry, RegistryError, RegistryKey,
    SignedRegistry, Site, VerifiedRegistry,
};
use serde::Deserialize;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum RegistryCmd {
    /// Make a registry-authority key pair: PKCS#8 DER private key (mode 0600), PEM public key.
    Keygen {
        #[arg(long)]
        key: PathBuf,
        #[arg(long = "pub")]
        public: PathBuf,
    },
    /// Build an unsigned registry (CBOR) from its TOML source.
    Create {
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Change an unsigned registry; the version is bumped and the result validated again.
    Edit(EditArgs),
    /// Sign an unsigned registry with the authority's key (COSE_Sign1, ES256).
    Sign {
        #[arg(long = "in")]
        input: PathBuf,
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a signed registry against one or more authority public keys.
    Verify {
        #[arg(long = "in")]
        input: PathBuf,
        /// Authority public key (PEM SPKI), repeatable.
        #[arg(long, required = true)]
        authority: Vec<PathBuf>,
    },
    /// Print a registry: signed files are verified first when --authority is given,
    /// otherwise marked UNVERIFIED.
    Show {
        #[arg(long = "in")]
        input: PathBuf,
        #[arg(long)]
        authority: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// The derived sovereignty attributes for the hardware attested in one round.
    Derive {
        #[arg(long = "in")]
        input: PathBuf,
        #[arg(long, required = true)]
        authority: Vec<PathBuf>,
        /// KIND:HEX with KIND ek_sha256, snp_chip_id, gpu_serial or tdx_ppid; repeatable.
        #[arg(long)]
        hardware: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct EditArgs {
    /// The unsigned registry (CBOR).
    file: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// SITE:KIND:HEX, repeatable.
    #[arg(long)]
    add_hardware: Vec<String>,
    /// KIND:HEX, repeatable.
    #[arg(long)]
    remove_hardware: Vec<String>,
    /// ENTITY:HOLDER:CAPITAL_BP:VOTING_BP (0:0 removes the holding), repeatable.
    #[arg(long)]
    set_holder: Vec<String>,
}

/// Exit 1 with the failed check, as opposed to usage and I/O errors (exit 2).
struct Refused(RegistryError);

pub fn run(cmd: RegistryCmd) -> ExitCode {
    let r = match cmd {
        RegistryCmd::Keygen { key, public } => keygen(&key, &public).map(|()| None),
        RegistryCmd::Create { from, out } => create(&from, &out).map(|()| None),
        RegistryCmd::Edit(a) => edit(&a).map(|()| None),
        RegistryCmd::Sign { input, key, out } => sign(&input, &key, &out).map(|()| None),
        RegistryCmd::Verify { input, authority } => verify(&input, &authority),
        RegistryCmd::Show {
            input,
            authority,
            json,
        } => show(&input, &authority, json),
        RegistryCmd::Derive {
            input,
            authority,
            hardware,
        } => derive(&input, &authority, &hardware),
    };
    match r {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(Refused(e))) => {
            eprintln!("custody: registry rejected: check `{}` failed: {e}", e.check());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("custody: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn print_json(v: &serde_json::Value) -> Result<()> {
    let s = serde_json::to_string_pretty(v).context("encode JSON")?;
    // A closed stdout must not panic; the exit code still carries the verdict.
    let _ = writeln!(std::io::stdout().lock(), "{s}");
    Ok(())
}

fn read(p: &Path) -> Result<Vec<u8>> {
    std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))
}

fn write(p: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(p, bytes).with_context(|| format!("cannot write {}", p.display()))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn keygen(key: &Path, public: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let k = RegistryKey::generate()?;
    let der = k.to_pkcs8()?;
    // The private key is a secret: never overwrite one, never world-readable.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(key)
        .with_context(|| format!("cannot create {} (it must not exist)", key.display()))?;
    f.write_all(&der)
        .with_context(|| format!("cannot write {}", key.display()))?;
    write(public, k.public().to_pem().as_bytes())?;
    print_json(&json!({
        "key": key.display().to_string(),
        "pub": public.display().to_string(),
        "kid": k.public().kid_hex(),
    }))
}

fn authorities(paths: &[PathBuf]) -> Result<Vec<AuthorityKey>> {
    paths
        .iter()
        .map(|p| {
            let bytes = read(p)?;
            let parsed = match std::str::from_utf8(&bytes) {
                Ok(text) if text.contains("-----BEGIN") => AuthorityKey::from_pem(text),
                _ => AuthorityKey::from_spki_der(&bytes),
            };
            parsed.with_context(|| format!("{} is not a P-256 public key", p.display()))
        })
        .collect()
}

fn load_unsigned(p: &Path) -> Result<Registry> {
    let bytes = read(p)?;
    if SignedRegistry::looks_signed(&bytes) {
        bail!(
            "{} is a signed registry; edit and sign the unsigned CBOR instead",
            p.display()
        );
    }
    Registry::from_cbor(&bytes).with_context(|| format!("{} is not a valid registry", p.display()))
}

// ---- TOML source ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Source {
    version: u64,
    issued_at: Option<i64>,
    authority: String,
    #[serde(default)]
    entities: Vec<SourceEntity>,
    #[serde(default)]
    sites: Vec<SourceSite>,
    #[serde(default)]
    hardware: Vec<SourceHardware>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceEntity {
    id: String,
    name: String,
    lei: Option<String>,
    registered_office: String,
    central_administration: String,
    principal_establishment: String,
    us_nexus: bool,
    #[serde(default)]
    holders: Vec<SourceHolding>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceHolding {
    entity: String,
    capital_bp: u32,
    voting_bp: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceSite {
    id: String,
    name: String,
    country: String,
    region: String,
    /// Degrees, converted to microdegrees (rounded to nearest).
    lat: f64,
    lon: f64,
    operator: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceHardware {
    site: String,
    /// KIND:HEX
    id: String,
    label: Option<String>,
}

fn micro(deg: f64, max: f64, what: &str, site: &str) -> Result<i32> {
    if !deg.is_finite() || deg.abs() > max {
        bail!("site {site}: {what} {deg} is out of range");
    }
    // In range, so it fits an i32 (at most 180e6).
    Ok((deg * 1e6).round() as i32)
}

fn from_source(src: Source) -> Result<Registry> {
    let country = |c: &str, ctx: &str| Country::new(c).with_context(|| ctx.to_owned());
    let mut entities = Vec::new();
    for e in src.entities {
        let ctx = format!("entity {}", e.id);
        entities.push(Entity {
            registered_office: country(&e.registered_office, &ctx)?,
            central_administration: country(&e.central_administration, &ctx)?,
            principal_establishment: country(&e.principal_establishment, &ctx)?,
            id: e.id,
            name: e.name,
            lei: e.lei,
            us_nexus: e.us_nexus,
            holders: e
                .holders
                .into_iter()
                .map(|h| Holding {
                    entity: h.entity,
                    capital_bp: h.capital_bp,
                    voting_bp: h.voting_bp,
                })
                .collect(),
        });
    }
    let mut sites = Vec::new();
    for s in src.sites {
        sites.push(Site {
            country: country(&s.country, &format!("site {}", s.id))?,
            lat_e6: micro(s.lat, 90.0, "lat", &s.id)?,
            lon_e6: micro(s.lon, 180.0, "lon", &s.id)?,
            id: s.id,
            name: s.name,
            region: s.region,
            operator: s.operator,
        });
    }
    let mut hardware = Vec::new();
    for h in src.hardware {
        hardware.push(Hardware {
            id: HardwareId::parse(&h.id).with_context(|| format!("hardware on site {}", h.site))?,
            site: h.site,
            label: h.label,
        });
    }
    let reg = Registry {
        version: src.version,
        issued_at: src.issued_at.unwrap_or_else(now),
        authority: src.authority,
        entities,
        sites,
        hardware,
    };
    reg.validate()?;
    Ok(reg)
}

fn create(from: &Path, out: &Path) -> Result<()> {
    let text = std::fs::read_to_string(from).with_context(|| format!("cannot read {}", from.display()))?;
    let src: Source =
        toml::from_str(&text).with_context(|| format!("{} is not a registry source", from.display()))?;
    let reg = from_source(src).with_context(|| format!("{}", from.display()))?;
    write(out, &reg.to_cbor()?)?;
    print_json(&summary(&reg))
}

fn edit(a: &EditArgs) -> Result<()> {
    let mut reg = load_unsigned(&a.file)?;
    for spec in &a.add_hardware {
        let (site, id) = spec
            .split_once(':')
            .with_context(|| format!("--add-hardware {spec}: want SITE:KIND:HEX"))?;
        reg.hardware.push(Hardware {
            site: site.to_owned(),
            id: HardwareId::parse(id).with_context(|| format!("--add-hardware {spec}"))?,
            label: None,
        });
    }
    for spec in &a.remove_hardware {
        let id = HardwareId::parse(spec).with_context(|| format!("--remove-hardware {spec}"))?;
        let before = reg.hardware.len();
        reg.hardware.retain(|h| h.id != id);
        if reg.hardware.len() == before {
            bail!("--remove-hardware {spec}: not in the registry");
        }
    }
    for spec in &a.set_holder {
        let parts: Vec<&str> = spec.split(':').collect();
        let [entity, holder, cap, vote] = parts.as_slice() else {
            bail!("--set-holder {spec}: want ENTITY:HOLDER:CAPITAL_BP:VOTING_BP");
        };
        let cap: u32 = cap
            .parse()
            .with_context(|| format!("--set-holder {spec}: capital"))?;
        let vote: u32 = vote
            .parse()
            .with_context(|| format!("--set-holder {spec}: voting"))?;
        let e = reg
            .entities
            .iter_mut()
            .find(|e| e.id == *entity)
            .with_context(|| format!("--set-holder {spec}: no entity {entity}"))?;
        e.holders.retain(|h| h.entity != *holder);
        if cap > 0 || vote > 0 {
            e.holders.push(Holding {
                entity: (*holder).to_owned(),
                capital_bp: cap,
                voting_bp: vote,
            });
        }
    }
    reg.version = reg.version.saturating_add(1);
    reg.issued_at = now();
    reg.validate().context("the edited registry is not consistent")?;
    write(&a.out, &reg.to_cbor()?)?;
    print_json(&summary(&reg))
}

fn sign(input: &Path, key: &Path, out: &Path) -> Result<()> {
    let reg = load_unsigned(input)?;
    let k = RegistryKey::from_pkcs8(&read(key)?)
        .with_context(|| format!("{} is not a P-256 PKCS#8 key", key.display()))?;
    let signed = SignedRegistry::sign(&reg, &k)?;
    write(out, &signed)?;
    print_json(&summary_with(&reg, [("kid", json!(k.public().kid_hex()))]))
}

fn summary(reg: &Registry) -> serde_json::Value {
    summary_with(reg, [])
}

fn summary_with<const N: usize>(reg: &Registry, extra: [(&str, serde_json::Value); N]) -> serde_json::Value {
    let mut v = json!({
        "version": reg.version,
        "issued_at": reg.issued_at,
        "authority": reg.authority,
        "entities": reg.entities.len(),
        "sites": reg.sites.len(),
        "hardware": reg.hardware.len(),
    });
    if let Some(m) = v.as_object_mut() {
        for (k, x) in extra {
            m.insert(k.to_owned(), x);
        }
    }
    v
}

/// Verify, or the refusal to report (exit 1).
fn verified(
    input: &Path,
    authority: &[PathBuf],
) -> Result<std::result::Result<VerifiedRegistry, RegistryError>> {
    let keys = authorities(authority)?;
    let bytes = read(input)?;
    Ok(SignedRegistry::verify(&bytes, &keys))
}

const CHECKS: [&str; 4] = [
    "registry_format",
    "registry_signature",
    "registry_authority",
    "registry_consistency",
];

fn verify(input: &Path, authority: &[PathBuf]) -> Result<Option<Refused>> {
    match verified(input, authority)? {
        Ok(v) => {
            let claims = summary_with(
                v.registry(),
                [("digest", json!(v.digest())), ("kid", json!(v.kid()))],
            );
            print_json(&json!({
                "kind": "registry",
                "verified": true,
                "checks": CHECKS.iter().map(|c| json!({"name": c, "ok": true, "detail": ""})).collect::<Vec<_>>(),
                "claims": claims,
            }))?;
            Ok(None)
        }
        Err(e) => {
            print_json(&json!({
                "kind": "registry",
                "verified": false,
                "checks": [{"name": e.check(), "ok": false, "detail": e.to_string()}],
                "claims": null,
            }))?;
            Ok(Some(Refused(e)))
        }
    }
}

fn registry_json(reg: &Registry) -> serde_json::Value {
    let mut v = serde_json::to_value(reg).unwrap_or_default();
    // Hardware ids as KIND:HEX rather than arrays of numbers.
    if let Some(m) = v.as_object_mut() {
        m.insert(
            "hardware".into(),
            reg.hardware
                .iter()
                .map(|h| json!({"site": h.site, "id": h.id.to_string(), "label": h.label}))
                .collect(),
        );
    }
    v
}

fn show(input: &Path, authority: &[PathBuf], as_json: bool) -> Result<Option<Refused>> {
    let bytes = read(input)?;
    let (reg, status, kid, digest) = if SignedRegistry::looks_signed(&bytes) {
        if authority.is_empty() {
            let (reg, kid) = SignedRegistry::inspect_unverified(&bytes)
                .map_err(|e| anyhow::anyhow!("check `{}` failed: {e}", e.check()))?;
            (reg, "UNVERIFIED", Some(kid), None)
        } else {
            match verified(input, authority)? {
                Ok(v) => (
                    v.registry().clone(),
                    "VERIFIED",
                    Some(v.kid().to_owned()),
                    Some(v.digest().to_owned()),
                ),
                Err(e) => return Ok(Some(Refused(e))),
            }
        }
    } else {
        let reg = match Registry::from_cbor(&bytes) {
            Ok(r) => r,
            Err(e) => return Ok(Some(Refused(e))),
        };
        (reg, "UNSIGNED", None, None)
    };
    if as_json {
        return print_json(&json!({
            "status": status,
            "kid": kid,
            "digest": digest,
            "registry": registry_json(&reg),
        }))
        .map(|()| None);
    }
    let mut o = String::new();
    let note = match status {
        "VERIFIED" => format!("signature verified, authority kid {}", kid.unwrap_or_default()),
        "UNVERIFIED" => format!(
            "signature NOT checked (pass --authority), claims kid {}",
            kid.unwrap_or_default()
        ),
        _ => "not signed".to_owned(),
    };
    o.push_str(&format!(
        "{status}: registry version {} by {} ({note})\n",
        reg.version, reg.authority
    ));
    o.push_str(&format!("issued_at: {}\n", reg.issued_at));
    if let Some(d) = digest {
        o.push_str(&format!("digest: {d}\n"));
    }
    o.push_str("entities:\n");
    for e in &reg.entities {
        o.push_str(&format!(
            "  {} {:?} office {} admin {} establishment {}{}{}\n",
            e.id,
            e.name,
            e.registered_office,
            e.central_administration,
            e.principal_establishment,
            if e.us_nexus { " us_nexus" } else { "" },
            e.lei.as_deref().map(|l| format!(" lei {l}")).unwrap_or_default()
        ));
        for h in &e.holders {
            o.push_str(&format!(
                "    held by {}: capital {} bp, voting {} bp\n",
                h.entity, h.capital_bp, h.voting_bp
            ));
        }
    }
    o.push_str("sites:\n");
    for s in &reg.sites {
        o.push_str(&format!(
            "  {} {:?} {} {} ({:.6}, {:.6}) operated by {}\n",
            s.id,
            s.name,
            s.country,
            s.region,
            f64::from(s.lat_e6) / 1e6,
            f64::from(s.lon_e6) / 1e6,
            s.operator
        ));
    }
    o.push_str("hardware:\n");
    for h in &reg.hardware {
        o.push_str(&format!(
            "  {} at {}{}\n",
            h.id,
            h.site,
            h.label.as_deref().map(|l| format!(" ({l})")).unwrap_or_default()
        ));
    }
    let _ = std::io::stdout().lock().write_all(o.as_bytes());
    Ok(None)
}

fn derive(input: &Path, authority: &[PathBuf], hardware: &[String]) -> Result<Option<Refused>> {
    let ids = hardware
        .iter()
        .map(|h| HardwareId::parse(h).with_context(|| format!("--hardware {h}")))
        .collect::<Result<Vec<_>>>()?;
    match verified(input, authority)? {
        Ok(v) => {
            let d = serde_json::to_value(v.derive(&ids)).context("encode derived attributes")?;
            print_json(&d)?;
            Ok(None)
        }
        Err(e) => Ok(Some(Refused(e))),
    }
}
