# Custody `defense-restricted`: the strictest shipped policy.
#
# - every device's evidence verified (and everything `default` requires);
# - SEV-SNP chains checked against a current AMD CRL (revocation `good`);
# - a verified TPM, and the agent inside an attested confidential VM (key_protection
#   `cvm`: SNP reference values matched, chip registered at the node's site);
# - every GPU attested, in CC mode "on";
# - a strong locality proof (session key in CVM memory or TPM-bound) placing the node
#   within data.custody.params.locality_km (default 100) of params.locality_site
#   (default: its registered site);
# - site country in params.allowed_countries (default ["FR"]);
# - operator not cloud_act_exposed, SecNumCloud immune, only EU jurisdictions;
# - the node neither failed nor revoked.
package custody.defense_restricted

import rego.v1


# The deployment's parameters (data.custody.params) over this policy's defaults.
params := data.custody.lib.params({
	"allowed_countries": ["FR"],
	"locality_km": 100,
})

default allow := false

allow if {
	count(input.devices) > 0
	count(deny) == 0
}

deny contains msg if some msg in data.custody.lib.device_deny

deny contains msg if {
	not data.custody.lib.verified("tpm")
	msg := sprintf("%s has no verified TPM evidence", [data.custody.lib.node])
}

# A GPU in CC mode is no confidential VM (the session key is not in GPU memory), and a
# genuine SNP report alone proves only that *some* guest saw the round: the verifier
# says `cvm` only for the node's own attested guest (docs/locality.md).
deny contains msg if {
	not data.custody.lib.cvm_attested
	msg := sprintf("%s does not run in an attested confidential VM (session key protection: %s): %s", [
		data.custody.lib.node,
		object.get(input, ["key_protection", "level"], "unknown"),
		concat("; ", object.get(input, ["key_protection", "reasons"], [])),
	])
}

# Every SEV-SNP chain checked against a current CRL of its ARK: `stale` or `unchecked`
# revocation is not enough here.
deny contains msg if {
	some name, d in input.devices
	d.kind == "snp"
	d.verified
	status := object.get(d, ["claims", "revocation", "status"], "unchecked")
	status != "good"
	msg := sprintf("%s: the SEV-SNP chain's revocation is %s; defense-restricted requires a current AMD CRL (good)", [name, status])
}

# The same for the SEV-SNP chain of an Azure CVM's paravisor report (only nodes with one
# walk the devices).
deny contains msg if {
	data.custody.lib.verified("azure")
	some name, d in input.devices
	d.kind == "azure"
	d.verified
	status := object.get(d, ["claims", "snp", "revocation", "status"], "unchecked")
	status != "good"
	msg := sprintf("%s: the SEV-SNP chain's revocation is %s; defense-restricted requires a current AMD CRL (good)", [name, status])
}

# A TDX platform must be at Intel's current TCB: `OutOfDate`, `SWHardeningNeeded` and
# the `ConfigurationNeeded` statuses are genuine but carry open advisories.
deny contains msg if {
	# Only nodes with a verified TDX quote walk the devices.
	data.custody.lib.verified("tdx")
	some name, d in input.devices
	d.kind == "tdx"
	d.verified
	status := object.get(d, ["claims", "tcb_status"], "unknown")
	status != "UpToDate"
	msg := sprintf("%s: the TDX platform's TCB is %s (advisories: %s); defense-restricted requires UpToDate", [
		name, status, concat(", ", object.get(d, ["claims", "advisory_ids"], [])),
	])
}


deny contains msg if some msg in data.custody.lib.gpu_cc_deny

deny contains msg if some msg in data.custody.lib.sovereignty_deny

deny contains msg if some msg in data.custody.lib.country_deny(params.allowed_countries)

deny contains msg if some msg in data.custody.lib.cloud_act_deny

deny contains msg if some msg in data.custody.lib.secnumcloud_deny

deny contains msg if some msg in data.custody.lib.jurisdiction_deny

deny contains msg if some msg in data.custody.lib.locality_deny(params.locality_km, data.custody.lib.locality_site, true, true)

deny contains msg if {
	input.node.state in {"failed", "revoked"}
	msg := sprintf("%s is %s", [data.custody.lib.node, input.node.state])
}

trust_vector := data.custody.lib.trust_vector
