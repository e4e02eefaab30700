//! Binds the few libxml2 / xmlsec1 functions and structs custody-xmldsig uses.
//!
//! pkg-config finds the system libraries (Debian: libxml2-dev, libxmlsec1-dev,
//! libxmlsec1-openssl) and prints the link flags; bindgen (libclang) generates the
//! declarations from the installed headers with the same defines, so struct layouts
//! (e.g. `xmlSecDSigCtx`, whose `xmlSecSize` depends on `XMLSEC_NO_SIZE_T`) match the
//! library that is linked. The allowlist keeps the generated surface small.

use std::env;
use std::path::PathBuf;

const FUNCTIONS: &[&str] = &[
    // libxml2
    "xmlInitParser",
    "xmlReadMemory",
    "xmlFreeDoc",
    "xmlDocGetRootElement",
    "xmlSetGenericErrorFunc",
    "xmlSetStructuredErrorFunc",
    // xmlsec core
    "xmlSecInit",
    "xmlSecCheckVersionExt",
    "xmlSecErrorsSetCallback",
    "xmlSecDSigCtxCreate",
    "xmlSecDSigCtxDestroy",
    "xmlSecDSigCtxVerify",
    "xmlSecDSigCtxEnableReferenceTransform",
    "xmlSecDSigCtxEnableSignatureTransform",
    "xmlSecKeyDestroy",
    "xmlSecPtrListGetSize",
    "xmlSecPtrListGetItem",
    "xmlSecTransformEnvelopedGetKlass",
    "xmlSecTransformInclC14NGetKlass",
    "xmlSecTransformInclC14N11GetKlass",
    "xmlSecTransformExclC14NGetKlass",
    "xmlSecTransformMemBufGetKlass",
    // OpenSSL backend
    "xmlSecOpenSSLAppInit",
    "xmlSecOpenSSLInit",
    "xmlSecOpenSSLAppKeyLoadMemory",
    "xmlSecOpenSSLTransformEcdsaSha256GetKlass",
    "xmlSecOpenSSLTransformEcdsaSha384GetKlass",
    "xmlSecOpenSSLTransformEcdsaSha512GetKlass",
    "xmlSecOpenSSLTransformSha256GetKlass",
    "xmlSecOpenSSLTransformSha384GetKlass",
    "xmlSecOpenSSLTransformSha512GetKlass",
];

const TYPES: &[&str] = &[
    "xmlDoc",
    "xmlNode",
    "xmlNs",
    "xmlSecDSigCtx",
    "xmlSecDSigReferenceCtx",
    "xmlSecDSigStatus",
    "xmlSecTransform",
    "xmlSecTransformKlass",
    "xmlSecKeyDataFormat",
    "xmlElementType",
    "xmlParserOption",
];

const VARS: &[&str] = &[
    "XML_PARSE_NONET",
    "XML_PARSE_NOERROR",
    "XML_PARSE_NOWARNING",
    "XMLSEC_VERSION_MAJOR",
    "XMLSEC_VERSION_MINOR",
    "XMLSEC_VERSION_SUBMINOR",
    "XMLSEC_DSIG_FLAGS_IGNORE_MANIFESTS",
    "XMLSEC_DSIG_FLAGS_STORE_SIGNEDINFO_REFERENCES",
    "XMLSEC_KEYINFO_FLAGS_X509DATA_DONT_VERIFY_CERTS",
    "xmlSecTransformUriTypeEmpty",
];

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=build.rs");
    let lib = match pkg_config::Config::new()
        .atleast_version("1.2.30")
        .probe("xmlsec1-openssl")
    {
        Ok(lib) => lib,
        Err(e) => {
            // A build script reports failure by exiting non-zero with a message.
            eprintln!(
                "custody-xmldsig needs libxmlsec1 with the OpenSSL backend and libxml2 \
                 (Debian: apt-get install libxml2-dev libxmlsec1-dev libxmlsec1-openssl \
                 clang libclang-dev): {e}"
            );
            std::process::exit(1);
        }
    };

    let mut clang_args: Vec<String> = lib
        .include_paths
        .iter()
        .map(|p| format!("-I{}", p.display()))
        .collect();
    for (k, v) in &lib.defines {
        match v {
            Some(v) => clang_args.push(format!("-D{k}={v}")),
            None => clang_args.push(format!("-D{k}")),
        }
    }

    let mut b = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_args(&clang_args)
        .allowlist_recursively(true)
        .layout_tests(true)
        .derive_default(false)
        .generate_comments(false)
        .prepend_enum_name(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for f in FUNCTIONS {
        b = b.allowlist_function(f);
    }
    for t in TYPES {
        b = b.allowlist_type(t);
    }
    for v in VARS {
        b = b.allowlist_var(v);
    }
    let bindings = match b.generate() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("bindgen failed on the xmlsec1 headers: {e}");
            std::process::exit(1);
        }
    };
    let out = PathBuf::from(env::var("OUT_DIR").unwrap_or_default()).join("bindings.rs");
    if let Err(e) = bindings.write_to_file(&out) {
        eprintln!("cannot write {}: {e}", out.display());
        std::process::exit(1);
    }
}
