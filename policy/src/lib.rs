//! Appraisal policy: typed input (claims per device, derived sovereignty attributes,
//! locality proofs, node state) in, a decision with human-readable reasons and an AR4SI
//! trust vector out. Policies are Rego (the convention of OPA, Trustee and NVIDIA's
//! relying-party policy), evaluated by regorus. docs/policy.md documents input and output.
//!
//! A policy is a Rego module in package `custody.<name>` with a boolean rule `allow`, a
//! set `deny` of reason strings and optionally an object `trust_vector`. The decision
//! allows only when `allow` is true *and* `deny` is empty, so a policy that forgets a
//! reason still cannot allow by accident. The helper module `custody.lib`
//! (policies/lib.rego) is loaded beside every policy.
//!
//! Evaluation is compiled once and reused: a generated wrapper rule returns `{allow, deny,
//! trust_vector}` in one evaluation; the policy is compiled to a regorus RVM program
//! (register VM, about 4x faster than the tree-walking interpreter on the shipped
//! policies) and a small pool of VMs runs it. A decision pops a VM (or builds one when the
//! pool is empty), sets the input, runs the program and pushes the VM back; the VM resets
//! its state per execution and the data document is fixed at construction, so decisions
//! stay independent. A policy the RVM compiler does not support, or whose program decides
//! differently from the interpreter on the empty input, runs on a pool of prepared
//! interpreter engines instead.
//!
//! Only the shipped policies run on the RVM. regorus 0.14.1's VM mis-evaluates some Rego
//! that its interpreter gets right (docs/upstream/regorus-0.14.1-rvm-bugs.md: a deny
//! reason can silently go missing), and the shipped policies are the ones whose programs
//! the tests check against the interpreter on every fixture case. A policy from a file
//! runs on the interpreter.
#![forbid(unsafe_code)]

pub mod input;

use aws_lc_rs::digest;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use thiserror::Error;

pub use input::PolicyInput;

/// The policy shipped with Custody and used when none is configured.
pub const DEFAULT_POLICY: &str = include_str!("../policies/default.rego");
/// EU/EEA site, operator outside the CLOUD Act, optional GPU CC and locality bounds.
pub const EU_SOVEREIGN: &str = include_str!("../policies/eu-sovereign.rego");
/// eu-sovereign in France, plus SecNumCloud 19.6 immunity and EU-only jurisdictions.
pub const SECNUMCLOUD: &str = include_str!("../policies/secnumcloud.rego");
/// The strictest: CVM + TPM, CC GPUs only, strong locality within 100 km, FR sites.
pub const DEFENSE_RESTRICTED: &str = include_str!("../policies/defense-restricted.rego");
/// Helpers every policy may import as `data.custody.lib`.
pub const LIB: &str = include_str!("../policies/lib.rego");

/// The shipped policies by name, default first.
pub const SHIPPED: [(&str, &str); 4] = [
    ("default", DEFAULT_POLICY),
    ("eu-sovereign", EU_SOVEREIGN),
    ("secnumcloud", SECNUMCLOUD),
    ("defense-restricted", DEFENSE_RESTRICTED),
];

/// The package of the wrapper module that evaluates a policy's three rules at once. It is
/// outside `custody.` so no policy can declare it.
const WRAPPER_PACKAGE: &str = "custody_decision";
/// The wrapper's rule: one evaluation per decision.
const ENTRY: &str = "data.custody_decision.decision";
/// regorus's RVM instruction limit for a new VM (`RegoVM::new`), restored after a
/// budgeted evaluation.
const DEFAULT_MAX_INSTRUCTIONS: usize = 25_000;
/// Engines kept for reuse; more concurrent decisions than this clone and drop.
const POOL_MAX: usize = 64;
/// Wall-clock bound on one evaluation by the interpreter, which has no instruction limit
/// like the RVM's: a policy from a file that loops (over a large range, say) fails its
/// decision instead of holding a verifier thread. A decision takes about 0.2 ms.
const INTERPRETER_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

fn interpreter_timer() -> regorus::utils::limits::ExecutionTimerConfig {
    regorus::utils::limits::ExecutionTimerConfig {
        limit: INTERPRETER_TIME_LIMIT,
        // Work units (loop iterations, expressions) between two reads of the clock.
        check_interval: std::num::NonZeroU32::new(256).unwrap_or(std::num::NonZeroU32::MIN),
    }
}

#[derive(Debug, Error)]
pub enum PolicyError {
    #[error("policy `{id}` does not compile: {reason}")]
    Compile { id: String, reason: String },
    #[error("policy `{id}` has no `package custody.<name>` declaration (or uses a reserved one: custody.lib, custody.params)")]
    Package { id: String },
    #[error(
        "no shipped policy is named `{0}` (known: default, eu-sovereign, secnumcloud, defense-restricted)"
    )]
    Unknown(String),
    #[error("policy data is not valid: {0}")]
    Data(String),
    #[error("policy input is not valid: {0}")]
    Input(String),
    #[error("policy `{id}` failed to evaluate `{rule}`: {reason}")]
    Eval {
        id: String,
        rule: String,
        reason: String,
    },
    #[error("policy `{id}`: rule `{rule}` has the wrong type ({found})")]
    Type { id: String, rule: String, found: String },
}

impl PolicyError {
    /// Stable name of the failed step, for results and exit messages.
    pub fn check(&self) -> &'static str {
        match self {
            Self::Compile { .. } => "policy_compile",
            Self::Package { .. } => "policy_package",
            Self::Unknown(_) => "policy_unknown",
            Self::Data(_) => "policy_data",
            Self::Input(_) => "policy_input",
            Self::Eval { .. } => "policy_eval",
            Self::Type { .. } => "policy_type",
        }
    }
}

/// AR4SI trustworthiness claims (draft-ietf-rats-ar4si), one signed byte each: 0 no claim,
/// 2 affirming, 32 warning, 96 contraindicated, -1 verifier malfunction (and the other
/// values the draft defines per claim).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TrustVector {
    pub instance_identity: i8,
    pub configuration: i8,
    pub executables: i8,
    pub file_system: i8,
    pub hardware: i8,
    pub runtime_opaque: i8,
    pub storage_opaque: i8,
    pub sourced_data: i8,
}

impl TrustVector {
    /// The claim names, as a policy's `trust_vector` object spells them.
    pub const CLAIMS: [&'static str; 8] = [
        "instance_identity",
        "configuration",
        "executables",
        "file_system",
        "hardware",
        "runtime_opaque",
        "storage_opaque",
        "sourced_data",
    ];

    fn slot(&mut self, name: &str) -> Option<&mut i8> {
        Some(match name {
            "instance_identity" => &mut self.instance_identity,
            "configuration" => &mut self.configuration,
            "executables" => &mut self.executables,
            "file_system" => &mut self.file_system,
            "hardware" => &mut self.hardware,
            "runtime_opaque" => &mut self.runtime_opaque,
            "storage_opaque" => &mut self.storage_opaque,
            "sourced_data" => &mut self.sourced_data,
            _ => return None,
        })
    }
}

/// The outcome of one policy evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allow: bool,
    /// Why the node was refused, sorted; empty when allowed, never empty when refused.
    pub reasons: Vec<String>,
    /// The policy's `trust_vector` rule, when it has one.
    pub trust_vector: Option<TrustVector>,
    pub policy_id: String,
    /// SHA-256, hex, of what decided: the policy module, the helper library and the data
    /// parameters (see [`Policy::digest`]).
    pub policy_digest: String,
}

/// A policy compiled to regorus's register VM (RVM) program, and VMs to run it.
#[derive(Debug)]
struct Compiled {
    program: Arc<regorus::rvm::Program>,
    policy: regorus::CompiledPolicy,
    data: regorus::Value,
    pool: Mutex<Vec<regorus::rvm::RegoVM>>,
}

#[derive(Debug)]
struct Inner {
    id: String,
    package: String,
    digest: String,
    /// The fast path; None when the RVM compiler does not support the policy, and then
    /// the interpreter below decides.
    vm: Option<Compiled>,
    /// Prepared once at construction; cloned when the pool runs dry.
    prepared: Mutex<regorus::Engine>,
    pool: Mutex<Vec<regorus::Engine>>,
}

/// A compiled policy, ready to evaluate many inputs from many threads. Cloning shares the
/// compiled engines.
#[derive(Debug, Clone)]
pub struct Policy {
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock leaves an engine that is reset before every
    // evaluation anyway: poisoning carries no information here.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn package_of(rego: &str) -> Option<String> {
    rego.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("package "))
        .map(|p| p.trim().to_owned())
        .filter(|p| p.starts_with("custody.") && p != "custody.lib" && !p.starts_with("custody.params"))
}

impl Policy {
    /// Compile `rego` under the name `id` (a file name or policy id, for messages). It
    /// runs on regorus's interpreter: see the crate documentation for why only the
    /// shipped policies run on the RVM.
    pub fn new(id: &str, rego: &str) -> Result<Self, PolicyError> {
        Self::build(id, rego, None, Backend::Interpreter)
    }

    /// Compile `rego` with a data document, e.g. `{"custody": {"params": {...}}}`, that
    /// the policy reads as `data`. Parameters a deployment does not set keep the defaults
    /// written in the policy.
    pub fn with_data(id: &str, rego: &str, data: serde_json::Value) -> Result<Self, PolicyError> {
        Self::build(id, rego, Some(data), Backend::Interpreter)
    }

    /// A shipped policy by name (`default`, `eu-sovereign`, `secnumcloud`,
    /// `defense-restricted`).
    pub fn shipped(name: &str) -> Result<Self, PolicyError> {
        let (id, rego) = SHIPPED
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| PolicyError::Unknown(name.to_owned()))?;
        Self::build(id, rego, None, Backend::Rvm)
    }

    /// A shipped policy by name, with a data document.
    pub fn shipped_with_data(name: &str, data: serde_json::Value) -> Result<Self, PolicyError> {
        let (id, rego) = SHIPPED
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| PolicyError::Unknown(name.to_owned()))?;
        Self::build(id, rego, Some(data), Backend::Rvm)
    }

    pub fn default_policy() -> Result<Self, PolicyError> {
        Self::shipped("default")
    }

    fn build(
        id: &str,
        rego: &str,
        data: Option<serde_json::Value>,
        backend: Backend,
    ) -> Result<Self, PolicyError> {
        let package = package_of(rego).ok_or_else(|| PolicyError::Package { id: id.to_owned() })?;
        let compile = |reason: String| PolicyError::Compile {
            id: id.to_owned(),
            reason,
        };
        let mut engine = regorus::Engine::new();
        engine.set_strict_builtin_errors(true);
        // Every interpreted evaluation is bounded: construction's, the pool's clones of
        // this engine, and the tests' cross-checks. (The RVM has its own instruction
        // limit and does not read the engine's timer.)
        engine.set_execution_timer_config(interpreter_timer());
        engine
            .add_policy("custody/lib.rego".to_owned(), LIB.to_owned())
            .map_err(|e| compile(e.to_string()))?;
        engine
            .add_policy(format!("{id}.rego"), rego.to_owned())
            .map_err(|e| compile(e.to_string()))?;
        engine
            .add_policy("custody/decision.rego".to_owned(), wrapper(&package))
            .map_err(|e| compile(e.to_string()))?;

        let mut ctx = digest::Context::new(&digest::SHA256);
        // Length-prefixed parts, so no two different (policy, lib, data) give one digest.
        let data_json = match &data {
            Some(d) => {
                if !d.is_object() {
                    return Err(PolicyError::Data(
                        "the data document must be a JSON object".into(),
                    ));
                }
                serde_json::to_string(d).map_err(|e| PolicyError::Data(e.to_string()))?
            }
            None => String::new(),
        };
        for part in [rego, LIB, data_json.as_str()] {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part.as_bytes());
        }
        let digest = hex::encode(ctx.finish().as_ref());

        let mut data_value = regorus::Value::new_object();
        if data.is_some() {
            let value =
                regorus::Value::from_json_str(&data_json).map_err(|e| PolicyError::Data(e.to_string()))?;
            data_value = value.clone();
            engine
                .add_data(value)
                .map_err(|e| PolicyError::Data(e.to_string()))?;
        }

        // Prepare now (analysis, rule gathering) and catch policies that only fail when
        // evaluated, such as a `deny` that is not a set.
        engine.set_input(regorus::Value::new_object());
        engine
            .eval_rule(format!("data.{WRAPPER_PACKAGE}.decision"))
            .map_err(|e| compile(e.to_string()))?;

        let vm = match backend {
            Backend::Rvm => compile_vm(&mut engine.clone(), data_value),
            Backend::Interpreter => None,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                id: id.to_owned(),
                package,
                digest,
                vm,
                prepared: Mutex::new(engine),
                pool: Mutex::new(Vec::new()),
            }),
        })
    }

    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Which evaluator decides: `rvm` (regorus's compiled register VM, for a shipped
    /// policy) or `interpreter` (for a policy from a file, or one the RVM compiler does not
    /// support).
    pub fn backend(&self) -> &'static str {
        if self.inner.vm.is_some() {
            "rvm"
        } else {
            "interpreter"
        }
    }

    /// The Rego package the policy declares, e.g. `custody.eu_sovereign`.
    pub fn package(&self) -> &str {
        &self.inner.package
    }

    /// SHA-256, hex, over the policy source, the helper library and the data document
    /// (each as a big-endian u64 length then its bytes; data as compact JSON, empty when
    /// none): a change to any of them changes the digest results carry.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    /// Evaluate against a JSON input document. The input is first checked against
    /// [`PolicyInput`]; fields it does not know are passed to the policy as they are.
    pub fn evaluate(&self, input: &serde_json::Value) -> Result<Decision, PolicyError> {
        PolicyInput::check_json(input).map_err(|e| PolicyError::Input(e.to_string()))?;
        let value = input::to_regorus(input).map_err(|e| PolicyError::Input(e.to_string()))?;
        self.evaluate_value(value)
    }

    /// Evaluate a typed input.
    pub fn evaluate_input(&self, input: &PolicyInput) -> Result<Decision, PolicyError> {
        let json = serde_json::to_value(input).map_err(|e| PolicyError::Input(e.to_string()))?;
        let value = input::to_regorus(&json).map_err(|e| PolicyError::Input(e.to_string()))?;
        self.evaluate_value(value)
    }

    /// Evaluate with the interpreter on a fresh clone of the prepared engine, whatever the
    /// backend: the benchmark's comparison and the tests' cross-check of the RVM.
    #[doc(hidden)]
    pub fn evaluate_cloned(&self, input: &serde_json::Value) -> Result<Decision, PolicyError> {
        PolicyInput::from_json(input).map_err(|e| PolicyError::Input(e.to_string()))?;
        let value = <regorus::Value as serde::Deserialize>::deserialize(input)
            .map_err(|e| PolicyError::Input(e.to_string()))?;
        let mut engine = lock(&self.inner.prepared).clone();
        self.decide(&mut engine, value)
    }

    /// Evaluate an input already converted to a regorus value, unchecked: the benchmark's
    /// measure of the engine alone.
    #[doc(hidden)]
    pub fn evaluate_value(&self, value: regorus::Value) -> Result<Decision, PolicyError> {
        self.evaluate_value_within(value, None)
    }

    /// Like [`Policy::evaluate_value`], with the RVM stopped after `max_instructions`
    /// (an error then). The RVM's cost is mostly per instruction, so the smallest budget
    /// that decides is a measure of a policy's cost that, unlike time, does not vary
    /// from run to run: the benchmark prints it and a test bounds it.
    #[doc(hidden)]
    pub fn evaluate_value_within(
        &self,
        value: regorus::Value,
        max_instructions: Option<usize>,
    ) -> Result<Decision, PolicyError> {
        if let Some(c) = &self.inner.vm {
            let pooled = lock(&c.pool).pop();
            let mut vm = match pooled {
                Some(vm) => vm,
                None => new_vm(c).map_err(|reason| PolicyError::Eval {
                    id: self.inner.id.clone(),
                    rule: ENTRY.to_owned(),
                    reason,
                })?,
            };
            vm.set_input(value);
            if let Some(max) = max_instructions {
                vm.set_max_instructions(max);
            }
            let out = vm.execute_entry_point_by_name(ENTRY);
            vm.set_input(regorus::Value::Undefined);
            if max_instructions.is_some() {
                // Back to the limit a new VM has, before it returns to the pool.
                vm.set_max_instructions(DEFAULT_MAX_INSTRUCTIONS);
            }
            let mut pool = lock(&c.pool);
            if pool.len() < POOL_MAX {
                pool.push(vm);
            }
            drop(pool);
            let v = out.map_err(|e| PolicyError::Eval {
                id: self.inner.id.clone(),
                rule: format!("data.{}", self.inner.package),
                reason: e.to_string(),
            })?;
            return self.read_decision(&v);
        }
        self.evaluate_interpreted(value)
    }

    /// The RVM instructions one decision on `input` takes: the smallest budget of
    /// [`Policy::evaluate_value_within`] that decides. None on the interpreter backend
    /// (no instruction count) or when the input does not decide at all.
    #[doc(hidden)]
    pub fn instructions(&self, input: &serde_json::Value) -> Option<usize> {
        self.inner.vm.as_ref()?;
        let value = input::to_regorus(input).ok()?;
        let decides = |n| self.evaluate_value_within(value.clone(), Some(n)).is_ok();
        let (mut lo, mut hi) = (0, DEFAULT_MAX_INSTRUCTIONS);
        if !decides(hi) {
            return None;
        }
        // decides(lo) is false (nothing decides in 0 instructions), decides(hi) true.
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if decides(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Some(hi)
    }

    /// The interpreter path: a pooled engine.
    fn evaluate_interpreted(&self, value: regorus::Value) -> Result<Decision, PolicyError> {
        let pooled = lock(&self.inner.pool).pop();
        let mut engine = match pooled {
            Some(e) => e,
            None => lock(&self.inner.prepared).clone(),
        };
        let out = self.decide(&mut engine, value);
        // Drop the input now rather than keep it alive in the pool.
        engine.set_input(regorus::Value::Undefined);
        let mut pool = lock(&self.inner.pool);
        if pool.len() < POOL_MAX {
            pool.push(engine);
        }
        out
    }

    fn decide(&self, engine: &mut regorus::Engine, input: regorus::Value) -> Result<Decision, PolicyError> {
        let id = &self.inner.id;
        let pkg = &self.inner.package;
        engine.set_input(input);
        let v = engine
            .eval_rule(ENTRY.to_owned())
            .map_err(|e| PolicyError::Eval {
                id: id.clone(),
                rule: format!("data.{pkg}"),
                reason: e.to_string(),
            })?;
        self.read_decision(&v)
    }

    fn read_decision(&self, v: &regorus::Value) -> Result<Decision, PolicyError> {
        let id = &self.inner.id;
        let pkg = &self.inner.package;
        let ty = |rule: &str, found: &regorus::Value| PolicyError::Type {
            id: id.clone(),
            rule: format!("data.{pkg}.{rule}"),
            found: found.to_string(),
        };

        let allow_v = &v["allow"];
        let allow = *allow_v.as_bool().map_err(|_| ty("allow", allow_v))?;

        let deny_v = &v["deny"];
        let set = deny_v.as_set().map_err(|_| ty("deny", deny_v))?;
        let mut reasons = Vec::with_capacity(set.len());
        for r in set.iter() {
            reasons.push(match r.as_string() {
                Ok(s) => s.to_string(),
                Err(_) => r.to_string(),
            });
        }
        reasons.sort();
        if !allow && reasons.is_empty() {
            reasons.push(format!("policy `{id}` did not allow this node"));
        }

        let tv = &v["trust_vector"];
        let trust_vector = match tv {
            regorus::Value::Null | regorus::Value::Undefined => None,
            _ => Some(trust_vector(tv).map_err(|()| ty("trust_vector", tv))?),
        };

        Ok(Decision {
            allow: allow && reasons.is_empty(),
            reasons,
            trust_vector,
            policy_id: id.clone(),
            policy_digest: self.inner.digest.clone(),
        })
    }
}

/// Which evaluator a policy is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    /// The RVM where it compiles and agrees with the interpreter on the empty input.
    Rvm,
    Interpreter,
}

/// Compile the prepared engine's policy to an RVM program. None when the RVM compiler
/// rejects it (it covers most but not all of Rego), or when the program fails or decides
/// differently from the interpreter on the empty input: the interpreter then decides.
fn compile_vm(engine: &mut regorus::Engine, data: regorus::Value) -> Option<Compiled> {
    let entry: regorus::Rc<str> = ENTRY.into();
    let policy = engine.compile_with_entrypoint(&entry).ok()?;
    let program =
        regorus::languages::rego::compiler::Compiler::compile_from_policy(&policy, &[ENTRY]).ok()?;
    let c = Compiled {
        program,
        policy,
        data,
        pool: Mutex::new(Vec::new()),
    };
    let mut vm = new_vm(&c).ok()?;
    vm.set_input(regorus::Value::new_object());
    let via_vm = vm.execute_entry_point_by_name(ENTRY).ok()?;
    engine.set_input(regorus::Value::new_object());
    let via_engine = engine.eval_rule(ENTRY.to_owned()).ok()?;
    (via_vm == via_engine).then_some(c)
}

fn new_vm(c: &Compiled) -> Result<regorus::rvm::RegoVM, String> {
    let mut vm = regorus::rvm::RegoVM::new_with_policy(c.policy.clone());
    vm.load_program(c.program.clone());
    vm.set_strict_builtin_errors(true);
    vm.set_data(c.data.clone()).map_err(|e| e.to_string())?;
    Ok(vm)
}

/// Reads `{claim: int}`; unknown claims or values outside i8 are a type error, so a typo
/// in a policy does not silently read as "no claim".
fn trust_vector(v: &regorus::Value) -> Result<TrustVector, ()> {
    let obj = v.as_object().map_err(|_| ())?;
    let mut tv = TrustVector::default();
    for (k, val) in obj.iter() {
        let name = k.as_string().map_err(|_| ())?;
        let slot = tv.slot(name.as_ref()).ok_or(())?;
        let n = val.as_i64().map_err(|_| ())?;
        *slot = i8::try_from(n).map_err(|_| ())?;
    }
    Ok(tv)
}

/// The module that gathers a policy's rules into one value. Missing rules take defaults:
/// no `allow` is a refusal, no `deny` no reasons, no `trust_vector` null.
fn wrapper(package: &str) -> String {
    format!(
        "package {WRAPPER_PACKAGE}\n\
         import rego.v1\n\
         default allow := false\n\
         allow := data.{package}.allow\n\
         default deny := set()\n\
         deny := data.{package}.deny\n\
         default trust_vector := null\n\
         trust_vector := data.{package}.trust_vector\n\
         decision := {{\"allow\": allow, \"deny\": deny, \"trust_vector\": trust_vector}}\n"
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use serde_json::json;

    fn input(devices: serde_json::Value) -> serde_json::Value {
        json!({"node": {"id": "n1", "name": "node-a", "state": "trusted"}, "devices": devices})
    }

    fn tpm_ok() -> serde_json::Value {
        json!({"kind": "tpm", "verified": true, "claims": {"pcrs": {}}})
    }

    #[test]
    fn shipped_policies_compile() {
        for (name, _) in SHIPPED {
            let p = Policy::shipped(name).unwrap();
            assert_eq!(p.id(), name);
            assert_eq!(p.digest().len(), 64);
            assert_eq!(p.backend(), "rvm", "{name}");
        }
        assert!(matches!(Policy::shipped("nope"), Err(PolicyError::Unknown(_))));
    }

    #[test]
    fn default_allows_verified_evidence() {
        let p = Policy::default_policy().unwrap();
        let d = p.evaluate(&input(json!({"tpm": tpm_ok()}))).unwrap();
        assert!(d.allow, "{d:?}");
        assert!(d.reasons.is_empty());
        assert_eq!(d.policy_digest.len(), 64);
        assert_eq!(d.trust_vector.unwrap().instance_identity, 2);
    }

    #[test]
    fn default_denies_with_reasons() {
        let p = Policy::default_policy().unwrap();
        let d = p.evaluate(&input(json!({}))).unwrap();
        assert!(!d.allow);
        assert_eq!(d.reasons, vec!["no evidence was presented"]);

        let d = p
            .evaluate(&input(json!({
                "tpm": tpm_ok(),
                "gpu0": {"kind": "nvgpu", "verified": false, "failed_check": "signature", "claims": null},
                "snp": {"kind": "snp", "verified": true, "claims": {"policy": {"debug_allowed": true}}}
            })))
            .unwrap();
        assert!(!d.allow);
        assert_eq!(
            d.reasons,
            vec![
                "gpu0: evidence rejected by check `signature`",
                "snp: SEV-SNP guest policy allows debugging"
            ]
        );
    }

    #[test]
    fn allow_without_reasons_is_still_explained() {
        let p = Policy::new(
            "strict",
            "package custody.strict\nimport rego.v1\ndefault allow := false\n",
        )
        .unwrap();
        let d = p.evaluate(&input(json!({}))).unwrap();
        assert!(!d.allow);
        assert_eq!(d.reasons, vec!["policy `strict` did not allow this node"]);
        assert_eq!(d.trust_vector, None);
    }

    #[test]
    fn bad_policies_are_errors() {
        assert!(matches!(
            Policy::new("x", "package other\nallow := true"),
            Err(PolicyError::Package { .. })
        ));
        assert!(matches!(
            Policy::new("x", "package custody.lib\nallow := true"),
            Err(PolicyError::Package { .. })
        ));
        assert!(matches!(
            Policy::new("x", "package custody.x\nallow := {"),
            Err(PolicyError::Compile { .. })
        ));
        let p = Policy::new("t", "package custody.t\nallow := \"yes\"\n").unwrap();
        assert!(matches!(
            p.evaluate(&input(json!({}))),
            Err(PolicyError::Type { .. })
        ));
    }

    /// Two devices of one kind that disagree used to be a rule conflict: an evaluation
    /// error in the interpreter while the RVM decided. The claims now take the strongest
    /// finding, and both evaluators agree.
    #[test]
    fn disagreeing_devices_of_one_kind_are_contraindicated() {
        let failed =
            json!({"kind": "tpm", "verified": false, "failed_check": "quote_signature", "claims": null});
        for devices in [
            json!({"tpm": tpm_ok(), "tpm-b": failed}),
            json!({"tpm": failed, "tpm-b": tpm_ok()}),
        ] {
            for name in ["default", "eu-sovereign"] {
                let p = Policy::shipped(name).unwrap();
                let i = input(devices.clone());
                let d = p.evaluate(&i).unwrap();
                assert!(!d.allow, "{name}");
                let tv = d.trust_vector.unwrap();
                assert_eq!(tv.instance_identity, 96, "{name} {devices}");
                assert_eq!(tv.executables, 96);
                assert_eq!(tv.hardware, 96);
                assert_eq!(tv.configuration, 96);
                assert_eq!(
                    p.evaluate_cloned(&i).unwrap(),
                    d,
                    "{name}: interpreter and RVM differ"
                );
            }
        }
    }

    /// A rule reference that fails as a condition at the top of a comprehension, inside a
    /// rule body: regorus 0.14.1's RVM fails the whole body (here losing the deny reason,
    /// so the node is allowed) where the interpreter leaves the comprehension empty. One of
    /// the two reasons a policy from a file runs on the interpreter
    /// (docs/upstream/regorus-0.14.1-rvm-bugs.md).
    const RVM_MISSES_A_REASON: &str = "package custody.t\nimport rego.v1\n\
        default allow := false\nallow if count(deny) == 0\n\
        deny contains msg if some msg in reasons\n\
        flag if input.nothing\n\
        reasons := a | b if {\n\
            a := {m | flag; some name, _ in input.devices; m := name}\n\
            b := {m | some name, _ in input.devices; m := sprintf(\"%s: refused\", [name])}\n\
        }\n";

    #[test]
    fn a_policy_from_a_file_runs_on_the_interpreter_and_keeps_its_reasons() {
        let i = input(json!({"tpm": tpm_ok()}));
        let p = Policy::new("t", RVM_MISSES_A_REASON).unwrap();
        assert_eq!(p.backend(), "interpreter");
        let d = p.evaluate(&i).unwrap();
        assert!(!d.allow);
        assert_eq!(d.reasons, vec!["tpm: refused"]);
    }

    /// The tripwire for the upstream bug: when a regorus release fixes it, this fails, and
    /// policies from files can go back to the RVM (with this test turned around).
    #[test]
    fn regorus_rvm_still_drops_the_reason() {
        let i = input(json!({"tpm": tpm_ok()}));
        let p = Policy::build("t", RVM_MISSES_A_REASON, None, Backend::Rvm).unwrap();
        assert_eq!(p.backend(), "rvm", "the empty input does not show the bug");
        let d = p.evaluate(&i).unwrap();
        assert!(
            d.allow && d.reasons.is_empty(),
            "regorus's RVM now keeps the reason: {d:?}"
        );
        assert!(!p.evaluate_cloned(&i).unwrap().allow);
    }

    /// The second: a complete rule whose value is a variable of its body does not take
    /// its `else` on the RVM when that body fails. The empty input shows it, so the
    /// construction check finds the programs disagree and the interpreter decides.
    #[test]
    fn construction_catches_an_rvm_that_skips_an_else() {
        let rego = "package custody.t\nimport rego.v1\n\
            default allow := false\nallow if count(deny) == 0\n\
            deny contains msg if msg := sprintf(\"site %v\", [site])\n\
            site := v if {\n\tv := input.nothing\n} else := \"fallback\"\n";
        let p = Policy::build("t", rego, None, Backend::Rvm).unwrap();
        assert_eq!(p.backend(), "interpreter");
        let d = p.evaluate(&input(json!({"tpm": tpm_ok()}))).unwrap();
        assert_eq!(d.reasons, vec!["site fallback"]);
    }

    /// A policy from a file that would loop for hours fails its decision after the
    /// interpreter's time limit, naming the limit, instead of holding the thread.
    #[test]
    fn a_runaway_policy_from_a_file_is_stopped() {
        let rego = "package custody.t\nimport rego.v1\n\
            default allow := false\n\
            deny contains \"never\" if {\n\
                some i in numbers.range(1, count(input.devices) * 100000)\n\
                some j in numbers.range(1, 100000)\n\
                i == j + 1000000\n\
            }\n";
        let p = Policy::new("t", rego).unwrap();
        let started = std::time::Instant::now();
        let e = p.evaluate(&input(json!({"tpm": tpm_ok()}))).unwrap_err();
        let took = started.elapsed();
        assert!(matches!(&e, PolicyError::Eval { .. }), "{e}");
        assert!(e.to_string().contains("time limit"), "{e}");
        assert!(
            took >= INTERPRETER_TIME_LIMIT && took < 10 * INTERPRETER_TIME_LIMIT,
            "{took:?}"
        );
    }

    #[test]
    fn policy_is_send_sync() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Policy>();
    }
}
