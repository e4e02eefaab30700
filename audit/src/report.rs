//! The auditor's report: one self-contained HTML file (no script, no font, no request
//! leaves the page; it opens from a USB stick on an air-gapped laptop), built only from
//! the entries of an export that verified. Sections: the verification itself, the sites
//! the log saw, each job's stays, moves and refused moves, each node's results and
//! revocations. Every row names the log entry it comes from, and `custody audit prove
//! inclusion --index N` proves that entry again.
//!
//! The map and each node's registry history come from the places the `registry_change`
//! entries record (the sites' coordinates and operators, and which TPM EK is bound to
//! which site); a log written before those were recorded gets the sites its tickets named,
//! without a map.
//!
//! [`build`] turns verified entries into a [`Report`]; [`render`] writes the HTML. Numbers
//! a reader might check (entries, stays, refusals, nodes) are also `data-*` attributes,
//! so a test reads them from the page's DOM.

use crate::entry::{Entry, MigrationEntry, PlacedSite, PolicyEntry, RegistryEntry, RevocationAction};
use crate::history::{job_history, JobHistory, Outcome};
use crate::tree::{Hash, Tree};
use crate::verify::AuditSummary;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

mod map;

/// One node, as the log saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeLine {
    pub node: String,
    pub name: String,
    pub affirming: u64,
    pub warning: u64,
    pub contraindicated: u64,
    pub first_at: Option<i64>,
    pub last_at: Option<i64>,
    /// The last result's status and its entry.
    pub last: Option<(String, u64)>,
    /// Revocations and removals: (entry, at, what, reason).
    pub revocations: Vec<(u64, i64, String, String)>,
    pub enrollments: u64,
    /// Every result's time and status class (0 affirming, 1 warning, 2 contraindicated),
    /// in log order: the strip of results over time.
    pub results: Vec<(i64, u8)>,
    /// SHA-256 of the TPM EK certificate, hex, from its latest enrollment.
    pub ek: Option<String>,
    /// Registry versions that changed where the node is or who runs its site.
    pub registry: Vec<RegistryChangeLine>,
}

impl NodeLine {
    /// The node's state at the end of the log: `removed` or `revoked` when that came
    /// after its last result, else the last result's status (`enrolled` without one).
    pub fn state(&self) -> &str {
        let last_result = self.last.as_ref().map(|(_, i)| *i);
        match (self.revocations.last(), &self.last) {
            (Some((i, _, what, _)), _) if last_result.is_none_or(|r| *i > r) => what,
            (_, Some((status, _))) => status,
            _ => "enrolled",
        }
    }
}

/// The CSS class of a node state.
fn state_class(state: &str) -> &'static str {
    match state {
        "affirming" => "ok",
        "warning" | "enrolled" => "warn",
        _ => "bad",
    }
}

/// One registry version's effect on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryChangeLine {
    pub entry: u64,
    pub at: i64,
    pub version: u64,
    pub what: String,
}

/// One site, as the tickets appraised it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SiteLine {
    pub site: String,
    pub name: String,
    pub country: String,
    pub operator: String,
    /// Nodes appraised there (names).
    pub nodes: Vec<String>,
    /// From the latest registry that records places: where it is (microdegrees), whether
    /// its operator is exposed to the US CLOUD Act, and the nodes it binds here.
    pub lat_lon_e6: Option<(i32, i32)>,
    pub cloud_act_exposed: Option<bool>,
    pub bound: Vec<String>,
}

/// Everything the report shows.
#[derive(Debug, Clone)]
pub struct Report {
    pub summary: AuditSummary,
    /// The log key as the auditor holds it (`name+hash+key`).
    pub log_key: String,
    pub first_at: Option<i64>,
    pub last_at: Option<i64>,
    /// Entries per kind.
    pub kinds: BTreeMap<&'static str, u64>,
    pub registry_versions: Vec<(u64, u64, String)>,
    pub sites: Vec<SiteLine>,
    pub jobs: Vec<JobHistory>,
    pub nodes: Vec<NodeLine>,
    /// Per registry version that records places, in log order: (entry, version, site ->
    /// its operator exposed to the US CLOUD Act).
    pub exposure: Vec<(u64, u64, BTreeMap<String, bool>)>,
    /// Inclusion proofs of the jobs' entries in the audited tree (see [`Report::prove`]):
    /// entry index -> (leaf hash, audit path leaf side first).
    pub proofs: BTreeMap<u64, (Hash, Vec<Hash>)>,
}

impl JobHistory {
    /// Every log entry the job's rows cite, in order.
    fn cited(&self) -> BTreeSet<u64> {
        let mut out = BTreeSet::new();
        out.extend(self.stays.iter().map(|s| s.entry));
        for m in &self.moves {
            out.insert(m.entry);
            out.extend(m.outcome_entry);
        }
        out.extend(self.refused.iter().map(|f| f.entry));
        out
    }
}

impl Report {
    /// Whether `site`'s operator was exposed to the US CLOUD Act by the registry in force
    /// at entry `at` (the last version logged before it), and that version.
    pub fn exposed_at(&self, site: &str, at: u64) -> Option<(bool, u64)> {
        let (_, v, sites) = self.exposure.iter().rev().find(|(i, _, _)| *i < at)?;
        sites.get(site).map(|e| (*e, *v))
    }

    /// Add the inclusion proof of every entry the job sections cite, from the tree the
    /// audit rebuilt: the auditor's reader can check each against the root shown, or ask
    /// `custody audit prove inclusion` for it again.
    pub fn prove(&mut self, leaves: &Tree) {
        let size = self.summary.entries;
        for j in &self.jobs {
            for i in j.cited() {
                if let (Some(leaf), Ok(path)) = (leaves.leaf(i), leaves.inclusion_proof(i, size)) {
                    self.proofs.insert(i, (leaf, path));
                }
            }
        }
    }
}

/// Build the report from the entries of a verified export; `jobs` limits the job
/// sections (empty: every job the log names).
pub fn build(summary: &AuditSummary, log_key: &str, entries: &[Entry], jobs: &[String]) -> Report {
    let mut kinds: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut nodes: BTreeMap<String, NodeLine> = BTreeMap::new();
    let mut sites: BTreeMap<String, SiteLine> = BTreeMap::new();
    let mut registry_versions = Vec::new();
    let mut job_names: Vec<String> = Vec::new();
    let mut placed: Vec<(u64, &RegistryEntry)> = Vec::new();
    let (mut first_at, mut last_at) = (None::<i64>, None::<i64>);
    for (i, e) in (0u64..).zip(entries) {
        *kinds.entry(e.kind()).or_default() += 1;
        let at = e.at();
        first_at = Some(first_at.map_or(at, |f| f.min(at)));
        last_at = Some(last_at.map_or(at, |l| l.max(at)));
        match e {
            Entry::AttestationResult(r) => {
                let n = nodes.entry(r.node.clone()).or_default();
                n.node.clone_from(&r.node);
                n.name.clone_from(&r.name);
                match r.status.as_str() {
                    "affirming" => n.affirming += 1,
                    "warning" => n.warning += 1,
                    _ => n.contraindicated += 1,
                }
                n.first_at = Some(n.first_at.map_or(r.at, |f| f.min(r.at)));
                n.last_at = Some(n.last_at.map_or(r.at, |l| l.max(r.at)));
                n.last = Some((r.status.clone(), i));
                let class = match r.status.as_str() {
                    "affirming" => 0,
                    "warning" => 1,
                    _ => 2,
                };
                n.results.push((r.at, class));
            }
            Entry::Enrollment(x) => {
                let n = nodes.entry(x.node.clone()).or_default();
                n.node.clone_from(&x.node);
                n.name.clone_from(&x.name);
                n.enrollments += 1;
                if x.ek_cert_sha256.is_some() {
                    n.ek.clone_from(&x.ek_cert_sha256);
                }
            }
            Entry::Revocation(r) => {
                let n = nodes.entry(r.node.clone()).or_default();
                n.node.clone_from(&r.node);
                n.name.clone_from(&r.name);
                let what = match r.action {
                    Some(RevocationAction::Removed) => "removed",
                    None => "revoked",
                };
                n.revocations
                    .push((i, r.at, what.to_owned(), r.reason.clone().unwrap_or_default()));
            }
            Entry::RegistryChange(r) => {
                registry_versions.push((i, r.version, r.digest.clone()));
                if r.places.is_some() {
                    placed.push((i, r));
                }
            }
            Entry::Migration(m) => {
                if !job_names.iter().any(|j| j == m.job()) {
                    job_names.push(m.job().to_owned());
                }
                if let MigrationEntry::TicketIssued(t) = m {
                    for p in [&t.source_at, &t.destination_at].into_iter().flatten() {
                        let Some(site) = &p.site else { continue };
                        let s = sites.entry(site.clone()).or_default();
                        s.site.clone_from(site);
                        s.name = p.site_name.clone().unwrap_or_default();
                        s.country = p.country.clone().unwrap_or_default();
                        s.operator = p.operator.clone().unwrap_or_default();
                        if !s.nodes.contains(&p.name) {
                            s.nodes.push(p.name.clone());
                        }
                    }
                }
            }
            Entry::PolicyChange(
                PolicyEntry::Group(_) | PolicyEntry::ReferenceValues(_) | PolicyEntry::Policy(_),
            ) => {}
        }
    }
    for n in nodes.values_mut() {
        n.registry = registry_history(n.ek.as_deref(), &placed);
    }
    if let Some((_, latest)) = placed.last() {
        place_sites(&mut sites, latest, &nodes);
    }
    let wanted: Vec<String> = if jobs.is_empty() { job_names } else { jobs.to_vec() };
    let jobs = wanted
        .iter()
        .map(|j| job_history(j, (0u64..).zip(entries.iter())))
        .collect();
    Report {
        summary: summary.clone(),
        log_key: log_key.to_owned(),
        first_at,
        last_at,
        kinds,
        registry_versions,
        sites: sites.into_values().collect(),
        jobs,
        nodes: nodes.into_values().collect(),
        exposure: placed
            .iter()
            .filter_map(|(i, r)| {
                let p = r.places.as_ref()?;
                Some((
                    *i,
                    r.version,
                    p.sites
                        .iter()
                        .map(|s| (s.id.clone(), s.cloud_act_exposed))
                        .collect(),
                ))
            })
            .collect(),
        proofs: BTreeMap::new(),
    }
}

/// Where a registry puts the node whose EK certificate hashes to `ek`, and who runs it.
fn placement<'a>(ek: &str, r: &'a RegistryEntry) -> Option<&'a PlacedSite> {
    let places = r.places.as_ref()?;
    let id = format!("ek_sha256:{}", ek.to_ascii_lowercase());
    let h = places.hardware.iter().find(|h| h.id == id)?;
    places.sites.iter().find(|s| s.id == h.site)
}

/// The registry versions that changed a node's site, its site's operator or that
/// operator's CLOUD Act exposure, each as a sentence.
fn registry_history(ek: Option<&str>, placed: &[(u64, &RegistryEntry)]) -> Vec<RegistryChangeLine> {
    let Some(ek) = ek else { return Vec::new() };
    let mut out = Vec::new();
    let mut prev: Option<&PlacedSite> = None;
    for (i, r) in placed {
        let cur = placement(ek, r);
        let exposed = |s: &PlacedSite| {
            if s.cloud_act_exposed {
                ", exposed to the US CLOUD Act"
            } else {
                ""
            }
        };
        let what = match (prev, cur) {
            (None, None) => None,
            (None, Some(c)) => Some(format!(
                "bound to site {} ({}, {}), operated by {}{}",
                c.id,
                c.name,
                c.country,
                c.operator_name,
                exposed(c)
            )),
            (Some(p), None) => Some(format!("no longer in the registry (was at site {})", p.id)),
            (Some(p), Some(c)) if p.id != c.id => Some(format!(
                "moved from site {} ({}) to site {} ({}, {}), operated by {}{}",
                p.id,
                p.country,
                c.id,
                c.name,
                c.country,
                c.operator_name,
                exposed(c)
            )),
            (Some(p), Some(c)) => {
                let mut parts = Vec::new();
                if p.operator != c.operator {
                    parts.push(format!(
                        "site {} now operated by {} (was {})",
                        c.id, c.operator_name, p.operator_name
                    ));
                }
                if p.cloud_act_exposed != c.cloud_act_exposed {
                    parts.push(if c.cloud_act_exposed {
                        format!("operator {} now exposed to the US CLOUD Act", c.operator_name)
                    } else {
                        format!(
                            "operator {} no longer exposed to the US CLOUD Act",
                            c.operator_name
                        )
                    });
                }
                if p.country != c.country {
                    parts.push(format!("site {} now in {} (was {})", c.id, c.country, p.country));
                }
                (!parts.is_empty()).then(|| parts.join("; "))
            }
        };
        if let Some(what) = what {
            out.push(RegistryChangeLine {
                entry: *i,
                at: r.at,
                version: r.version,
                what,
            });
        }
        prev = cur;
    }
    out
}

/// The latest recorded registry's sites, with their places and the nodes bound there,
/// merged into the sites the tickets named.
fn place_sites(
    sites: &mut BTreeMap<String, SiteLine>,
    latest: &RegistryEntry,
    nodes: &BTreeMap<String, NodeLine>,
) {
    let Some(places) = &latest.places else { return };
    let mut bound: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for n in nodes.values() {
        if let Some(at) = n.ek.as_deref().and_then(|ek| placement(ek, latest)) {
            bound.entry(at.id.as_str()).or_default().push(n.node.clone());
        }
    }
    for p in &places.sites {
        let s = sites.entry(p.id.clone()).or_default();
        s.site.clone_from(&p.id);
        s.name.clone_from(&p.name);
        s.country.clone_from(&p.country);
        s.operator.clone_from(&p.operator_name);
        s.lat_lon_e6 = Some((p.lat_e6, p.lon_e6));
        s.cloud_act_exposed = Some(p.cloud_act_exposed);
        s.bound = bound.remove(p.id.as_str()).unwrap_or_default();
    }
}

/// Buckets in a node's strip of results over time.
const STRIP: usize = 24;

/// A node's results over `[from, to]` in [`STRIP`] equal buckets, each the worst status
/// in it (`None`: no result then), with its counts per status.
pub fn strip(results: &[(i64, u8)], from: i64, to: i64) -> Vec<Option<(u8, [u32; 3])>> {
    let mut out: Vec<Option<(u8, [u32; 3])>> = vec![None; STRIP];
    let span = (to - from).max(1);
    for &(at, class) in results {
        let k = usize::try_from((at - from).clamp(0, span) * (STRIP as i64 - 1) / span).unwrap_or(0);
        if let Some(slot) = out.get_mut(k) {
            let (worst, counts) = slot.get_or_insert((0, [0; 3]));
            *worst = (*worst).max(class);
            if let Some(c) = counts.get_mut(usize::from(class)) {
                *c += 1;
            }
        }
    }
    out
}

/// The strip as inline markup: one cell per bucket, coloured by its worst status; the
/// tooltip says what a cell spans (per-cell tooltips would double a fleet's page).
fn render_strip(n: &NodeLine, from: i64, to: i64) -> String {
    if n.results.is_empty() {
        return "-".to_owned();
    }
    let mut o = format!(
        "<span class=\"strip\" title=\"{} .. {}, each cell 1/{STRIP} of it: green all affirming, amber a warning, red a contraindicated result, grey none\">",
        rfc3339(from),
        rfc3339(to)
    );
    // Runs of one colour are one element (a fleet's page stays small): 6 px per cell.
    let classes: Vec<&str> = strip(&n.results, from, to)
        .into_iter()
        .map(|b| match b {
            None => "n",
            Some((0, _)) => "a",
            Some((1, _)) => "w",
            Some(_) => "c",
        })
        .collect();
    for run in classes.chunk_by(|a, b| a == b) {
        let class = run.first().copied().unwrap_or("n");
        let _ = write!(o, "<i class=\"{class}\" style=\"width:{}px\"></i>", run.len() * 6);
    }
    o.push_str("</span>");
    o
}

/// The inclusion proofs of a job's entries, folded: each against the audited root.
fn render_proofs(o: &mut String, r: &Report, j: &JobHistory) {
    let cited: Vec<u64> = j
        .cited()
        .into_iter()
        .filter(|i| r.proofs.contains_key(i))
        .collect();
    if cited.is_empty() {
        return;
    }
    let _ = write!(
        o,
        "<details class=\"proofs\" data-proofs=\"{}\"><summary>Inclusion proofs of these {} entries in the tree of {} entries, \
         root <span class=\"mono\">{}</span> (RFC 9162; <code>custody audit prove inclusion --index N</code> gives the same)</summary>\
         <table><tr><th>entry</th><th>leaf hash</th><th>audit path, leaf side first</th></tr>",
        cited.len(),
        cited.len(),
        r.summary.entries,
        esc(&r.summary.root)
    );
    for i in cited {
        let Some((leaf, path)) = r.proofs.get(&i) else {
            continue;
        };
        let _ = write!(
            o,
            "<tr class=\"proof\" data-index=\"{i}\"><td>{}</td><td class=\"mono\">{}</td><td class=\"mono path\">{}</td></tr>",
            entry_ref(i),
            hex::encode(leaf),
            path.iter().map(hex::encode).collect::<Vec<_>>().join(" ")
        );
    }
    o.push_str("</table></details>");
}

/// HTML text: `&`, `<`, `>`, `"` and `'` escaped.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// RFC 3339 UTC from Unix seconds (civil-from-days, no time library needed).
pub fn rfc3339(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn when(t: Option<i64>) -> String {
    t.map_or_else(|| "-".to_owned(), rfc3339)
}

fn entry_ref(i: u64) -> String {
    format!("<span class=\"entry\" title=\"custody audit prove inclusion --index {i}\">#{i}</span>")
}

// `content-visibility: auto` on the jobs and the node table: the browser lays them out
// when they scroll into view or print, so a fleet's report (1,000 node rows, 100 jobs)
// shows its first screen in about half the time it takes to lay out everything.
const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1b1f24;margin:2rem auto;max-width:1100px;padding:0 1rem}
h1{font-size:1.6rem;margin:0 0 .3rem}h2{font-size:1.2rem;border-bottom:2px solid #d0d7de;padding-bottom:.2rem;margin-top:2rem}
h3{font-size:1rem;margin:1.2rem 0 .4rem}
table{border-collapse:collapse;width:100%;margin:.4rem 0 1rem;table-layout:auto}th,td{border:1px solid #d0d7de;padding:.25rem .45rem;text-align:left;vertical-align:top;overflow-wrap:anywhere}td.when{white-space:nowrap}
th{background:#f6f8fa;overflow-wrap:normal;word-break:keep-all}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1a7f37}.warn{color:#9a6700}.bad{color:#cf222e}.entry{font-family:ui-monospace,monospace;color:#57606a}
.mono{font-family:ui-monospace,monospace;word-break:break-all}.muted{color:#57606a}
.timeline{display:flex;flex-wrap:wrap;gap:.3rem;align-items:center;margin:.4rem 0}
.stay{border:1px solid #8c959f;border-radius:4px;padding:.2rem .5rem;background:#f6f8fa}
.arrow{color:#57606a}
svg.map{width:100%;height:auto;border:1px solid #d0d7de;margin:.4rem 0}svg.map .sea{fill:#eef4fa}
svg.map .land{fill:#e4e7eb;stroke:#8c959f;stroke-width:.6}svg.map .land.sited{fill:#d2e3f5}
svg.map circle{stroke:#fff;stroke-width:2}svg.map circle.ok{fill:#1a7f37}svg.map circle.warn{fill:#bf8700}
svg.map circle.bad{fill:#cf222e}svg.map circle.none{fill:#8c959f}svg.map text{font-size:13px;fill:#1b1f24;paint-order:stroke;stroke:#fff;stroke-width:3px}
section{page-break-inside:avoid}
section.job,section#nodes{content-visibility:auto;contain-intrinsic-size:auto 800px}details.proofs td.path{font-size:11px}
.strip{display:inline-flex}.strip i{display:inline-block;height:14px;background:#eaeef2}
.strip i.a{background:#1a7f37}.strip i.w{background:#bf8700}.strip i.c{background:#cf222e}
@media print{body{margin:0;max-width:none}section.job,section#nodes,section#sites{page-break-before:always}a{color:inherit}}
";

/// The report as one HTML document.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let s = &r.summary;
    let stays: usize = r.jobs.iter().map(|j| j.stays.len()).sum();
    let refusals: usize = r.jobs.iter().map(|j| j.refused.len()).sum();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <title>Custody audit report: {}</title><style>{STYLE}</style></head>\n<body>\n",
        esc(&s.origin)
    );
    o.push_str(
        "<h1>Custody audit report</h1><p class=\"muted\">Built from the entries of an export that verified offline \
         against the log key below; nothing here comes from the operator's database.</p>\n",
    );
    // Verification.
    let _ = writeln!(
        o,
        "<section id=\"verification\"><h2>Verification</h2><table>\
         <tr><th>log</th><td class=\"mono\">{}</td></tr>\
         <tr><th>log key</th><td class=\"mono\">{}</td></tr>\
         <tr><th>entries</th><td id=\"entries\" data-entries=\"{}\">{}</td></tr>\
         <tr><th>signed checkpoints checked</th><td data-checkpoints=\"{}\">{}</td></tr>\
         <tr><th>root</th><td class=\"mono\">{}</td></tr>\
         <tr><th>first and last entry</th><td>{} .. {}</td></tr>\
         <tr><th>entries by kind</th><td>{}</td></tr>\
         <tr><th>registry versions</th><td>{}</td></tr></table>\
         <p class=\"muted\">Every entry up to the latest checkpoint was recomputed into its root and every \
         checkpoint's signature checked (<code>custody audit verify</code>). The export holds the signed entries \
         only: entries appended after the latest checkpoint are left out. Any row's entry can be proved again \
         with <code>custody audit prove inclusion --index N</code>.</p></section>",
        esc(&s.origin),
        esc(&r.log_key),
        s.entries,
        s.entries,
        s.checkpoints,
        s.checkpoints,
        esc(&s.root),
        when(r.first_at),
        when(r.last_at),
        r.kinds
            .iter()
            .map(|(k, n)| format!("{} {n}", esc(k)))
            .collect::<Vec<_>>()
            .join(", "),
        if r.registry_versions.is_empty() {
            "none".to_owned()
        } else {
            r.registry_versions
                .iter()
                .map(|(i, v, d)| format!("v{v} ({}...) {}", esc(d.get(..12).unwrap_or(d)), entry_ref(*i)))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    // Sites.
    let by_id: BTreeMap<&str, &NodeLine> = r.nodes.iter().map(|n| (n.node.as_str(), n)).collect();
    let label = |id: &String| {
        by_id
            .get(id.as_str())
            .map_or_else(|| id.clone(), |n| n.name.clone())
    };
    let state = |id: &String| by_id.get(id.as_str()).map_or("enrolled", |n| n.state());
    let mut dots = Vec::new();
    let mut sited = Vec::new();
    for site in &r.sites {
        let Some((lat, lon)) = site.lat_lon_e6 else {
            continue;
        };
        let states: Vec<&str> = site.bound.iter().map(state).collect();
        let class = if states.is_empty() {
            "none"
        } else if states.iter().any(|s| state_class(s) == "bad") {
            "bad"
        } else if states.iter().any(|s| state_class(s) == "warn") {
            "warn"
        } else {
            "ok"
        };
        dots.push(map::Dot {
            site: site.site.clone(),
            label: format!("{} ({})", site.name, site.bound.len()),
            title: format!(
                "{} {}, {}: {}",
                site.site,
                site.name,
                site.country,
                site.bound
                    .iter()
                    .map(|n| format!("{} {}", label(n), state(n)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            lat: f64::from(lat) / 1e6,
            lon: f64::from(lon) / 1e6,
            class,
        });
        sited.push(site.country.clone());
    }
    let _ = write!(o, "<section id=\"sites\"><h2>Sites</h2>");
    if dots.is_empty() {
        o.push_str(
            "<p class=\"muted\">No registry change in this log records site locations (logs from before they \
             were recorded); the sites below are those the tickets named.</p>",
        );
    } else {
        o.push_str(&map::svg(&dots, &sited));
        o.push_str(
            "<p class=\"muted\">Sites as the latest registry version in the log places them; a dot is green when every node \
             bound there passed its last round, amber when one only warned or has no result yet, red when one failed or \
             was revoked or removed. Outlines: Natural Earth 1:110m (public domain).</p>",
        );
    }
    let _ = write!(
        o,
        "<table data-sites=\"{}\"><tr><th>site</th><th>name</th><th>country</th>\
         <th>operator</th><th>US CLOUD Act</th><th>nodes bound there (state)</th><th>nodes appraised there by tickets</th></tr>",
        r.sites.len()
    );
    for site in &r.sites {
        let bound = site
            .bound
            .iter()
            .map(|n| {
                let st = state(n);
                format!(
                    "{} <span class=\"{}\">{}</span>",
                    esc(&label(n)),
                    state_class(st),
                    esc(st)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(
            o,
            "<tr class=\"site-row\" data-site=\"{}\"><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&site.site),
            esc(&site.site),
            esc(&site.name),
            esc(&site.country),
            esc(&site.operator),
            match site.cloud_act_exposed {
                Some(true) => "<span class=\"bad\">exposed</span>",
                Some(false) => "<span class=\"ok\">not exposed</span>",
                None => "-",
            },
            if bound.is_empty() { "-".to_owned() } else { bound },
            esc(&site.nodes.join(", "))
        );
    }
    if r.sites.is_empty() {
        o.push_str("<tr><td colspan=\"7\" class=\"muted\">neither a registry nor a ticket in the log names a site</td></tr>");
    }
    o.push_str("</table></section>\n");
    // Jobs.
    let _ = write!(
        o,
        "<section id=\"jobs\" data-jobs=\"{}\" data-stays=\"{stays}\" data-refusals=\"{refusals}\"><h2>Jobs</h2>",
        r.jobs.len()
    );
    if r.jobs.is_empty() {
        o.push_str("<p class=\"muted\">the log names no job</p>");
    }
    for j in &r.jobs {
        let _ = write!(
            o,
            "<section class=\"job\" data-job=\"{}\" data-stays=\"{}\" data-moves=\"{}\" data-refusals=\"{}\"><h3>Job {}</h3><div class=\"timeline\">",
            esc(&j.job),
            j.stays.len(),
            j.moves.len(),
            j.refused.len(),
            esc(&j.job)
        );
        for (k, st) in j.stays.iter().enumerate() {
            if k > 0 {
                o.push_str("<span class=\"arrow\">&rarr;</span>");
            }
            let _ = write!(
                o,
                "<span class=\"stay\">{} <span class=\"muted\">{}</span></span>",
                esc(&st.place.label()),
                esc(&st.place.operator)
            );
        }
        o.push_str("</div><table><tr><th>since</th><th>until</th><th>node</th><th>site</th><th>country</th><th>operator</th><th>US CLOUD Act</th><th>entry</th></tr>");
        for st in &j.stays {
            let _ = write!(
                o,
                "<tr class=\"stay-row\"><td>{}</td><td>{}</td><td>{}</td><td>{} {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                st.since.map_or_else(|| "(before the log)".to_owned(), rfc3339),
                st.until.map_or_else(|| "now".to_owned(), rfc3339),
                esc(if st.place.name.is_empty() { &st.place.node } else { &st.place.name }),
                esc(&st.place.site),
                esc(&st.place.site_name),
                esc(&st.place.country),
                esc(&st.place.operator),
                match r.exposed_at(&st.place.site, st.entry) {
                    Some((true, v)) => format!("<span class=\"bad\">exposed</span> (registry v{v})"),
                    Some((false, v)) => format!("<span class=\"ok\">not exposed</span> (registry v{v})"),
                    None => "-".to_owned(),
                },
                entry_ref(st.entry)
            );
        }
        o.push_str("</table><table><tr><th>ticket</th><th>from</th><th>to</th><th>policy</th><th>outcome</th><th>receipt</th><th>entries</th></tr>");
        for m in &j.moves {
            let (class, outcome) = match m.outcome {
                Outcome::Placed => ("ok", "placed"),
                Outcome::Failed => ("bad", "failed"),
                Outcome::Open => ("warn", "open"),
            };
            let _ = write!(
                o,
                "<tr><td class=\"mono\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{outcome}{}</td><td class=\"mono\">{}</td><td>{}{}</td></tr>",
                esc(m.ticket.get(..8).unwrap_or(&m.ticket)),
                esc(&m.source.label()),
                esc(&m.destination.label()),
                esc(&m.policy_id),
                m.check
                    .as_deref()
                    .map(|c| format!(": {}", esc(c)))
                    .unwrap_or_default(),
                esc(m.receipt_sha256.as_deref().map(|r| r.get(..16).unwrap_or(r)).unwrap_or("-")),
                entry_ref(m.entry),
                m.outcome_entry.map(|e| format!(" {}", entry_ref(e))).unwrap_or_default()
            );
        }
        o.push_str("</table>");
        if !j.refused.is_empty() {
            o.push_str("<table><tr><th>refused at</th><th>from</th><th>to</th><th>check</th><th>reasons</th><th>entry</th></tr>");
            for f in &j.refused {
                let _ = write!(
                    o,
                    "<tr class=\"refusal\"><td>{}</td><td>{}</td><td>{}</td><td class=\"bad\">{}</td><td>{}</td><td>{}</td></tr>",
                    when(f.at),
                    esc(&f.source),
                    esc(&f.destination),
                    esc(&f.check),
                    esc(&if f.reasons.is_empty() { f.detail.clone() } else { f.reasons.join("; ") }),
                    entry_ref(f.entry)
                );
            }
            o.push_str("</table>");
        }
        render_proofs(&mut o, r, j);
        o.push_str("</section>\n");
    }
    o.push_str("</section>\n");
    // Nodes.
    let _ = write!(
        o,
        "<section id=\"nodes\" data-nodes=\"{}\"><h2>Nodes</h2><table><tr><th>node</th><th>affirming</th><th>warning</th>\
         <th>contraindicated</th><th>first .. last result</th><th>results over time</th><th>last</th><th>state</th><th>enrollments</th><th>revocations and removals</th>\
         <th>registry changes</th></tr>",
        r.nodes.len()
    );
    // Every node's strip spans the same time: the first to the last result in the log.
    let results_from = r.nodes.iter().filter_map(|n| n.first_at).min().unwrap_or(0);
    let results_to = r.nodes.iter().filter_map(|n| n.last_at).max().unwrap_or(0);
    for n in &r.nodes {
        let last = n
            .last
            .as_ref()
            .map(|(st, i)| {
                let class = match st.as_str() {
                    "affirming" => "ok",
                    "warning" => "warn",
                    _ => "bad",
                };
                format!("<span class=\"{class}\">{}</span> {}", esc(st), entry_ref(*i))
            })
            .unwrap_or_else(|| "-".into());
        let revs = n
            .revocations
            .iter()
            .map(|(i, at, what, why)| {
                format!(
                    "<span class=\"bad\">{what}</span> {} ({}) {}",
                    rfc3339(*at),
                    esc(why),
                    entry_ref(*i)
                )
            })
            .collect::<Vec<_>>()
            .join("<br>");
        let changes = n
            .registry
            .iter()
            .map(|c| {
                format!(
                    "<span class=\"registry-change\">v{} {}: {}</span> {}",
                    c.version,
                    rfc3339(c.at),
                    esc(&c.what),
                    entry_ref(c.entry)
                )
            })
            .collect::<Vec<_>>()
            .join("<br>");
        let st = n.state();
        let _ = write!(
            o,
            "<tr class=\"node-row\" data-node=\"{}\" data-state=\"{}\" data-registry-changes=\"{}\"><td>{} <span class=\"mono muted\">{}</span></td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{} .. {}</td><td>{}</td><td>{last}</td>\
             <td class=\"{}\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&n.node),
            esc(st),
            n.registry.len(),
            esc(&n.name),
            esc(&n.node),
            n.affirming,
            n.warning,
            n.contraindicated,
            when(n.first_at),
            when(n.last_at),
            render_strip(n, results_from, results_to),
            state_class(st),
            esc(st),
            n.enrollments,
            if revs.is_empty() { "-".into() } else { revs },
            if changes.is_empty() { "-".into() } else { changes }
        );
    }
    o.push_str("</table></section>\n</body></html>\n");
    o
}

#[cfg(test)]
mod tests;
