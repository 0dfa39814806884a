"""``tufwaves keys``: generate key pairs, record keys held behind a URI."""

from __future__ import annotations

import argparse
from pathlib import Path

from tufwaves.cli._common import add_json_flag, emit_json, example_epilog, info
from tufwaves.errors import StorageError
from tufwaves.server.keys import (
    KEY_TYPES,
    PASSPHRASE_ENV,
    generate_key,
    import_uri_key,
    passphrase,
    write_key_pair,
)
from tufwaves.server.signers import HSM_PIN_ENV, PKCS11_MODULE_ENV, import_hsm_key, public_pem


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser(
        "keys",
        help="generate and import signing keys",
        description="Generate offline signing keys, or record keys held in an HSM or KMS.",
        epilog=example_epilog("tufwaves keys generate alice --dir keys"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ksub = keys.add_subparsers(dest="keys_command", required=True)

    gen = ksub.add_parser(
        "generate",
        help="generate a key pair: NAME.pub and encrypted NAME.key",
        description=(
            "Write DIR/NAME.pub (TUF key JSON with keyid) and DIR/NAME.key "
            "(PKCS#8 PEM encrypted with the passphrase, mode 0600, never "
            f"overwritten). The passphrase comes from {PASSPHRASE_ENV} or a prompt."
        ),
        epilog=example_epilog("tufwaves keys generate alice --dir ~/offline-keys --type ecdsa"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument("name", metavar="NAME", help="key name: the file names and signer name")
    gen.add_argument(
        "--dir", required=True, type=Path, metavar="DIR", help="folder for the key files"
    )
    gen.add_argument(
        "--type", choices=KEY_TYPES, default="ed25519", help="key algorithm (default ed25519)"
    )
    add_json_flag(gen)
    gen.set_defaults(func=_generate)

    imp = ksub.add_parser(
        "import-uri",
        help="record a key whose private half is behind a signer URI (HSM, KMS)",
        description=(
            "Write DIR/NAME.pub naming a securesystemslib private-key URI, so "
            "every command that takes --key can sign with it."
        ),
        epilog=example_epilog(
            "tufwaves keys import-uri hsm1 --dir keys --uri hsm: --public-key hsm1.pem"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    imp.add_argument("name", metavar="NAME", help="key name: the .pub file and signer name")
    imp.add_argument("--dir", required=True, type=Path, metavar="DIR", help="folder for NAME.pub")
    imp.add_argument("--uri", required=True, help="securesystemslib private key URI")
    imp.add_argument(
        "--public-key",
        required=True,
        type=Path,
        metavar="PEM",
        help="the public key as a PEM file",
    )
    imp.set_defaults(func=_import_uri)

    hsm = ksub.add_parser(
        "import-hsm",
        help="record a key pair held on a PKCS#11 token (HSM, smart card, YubiKey PIV)",
        description=(
            "Read the public half of an ECDSA P-256/P-384 key on a PKCS#11 token "
            f"and write DIR/NAME.pub naming its hsm: URI. {PKCS11_MODULE_ENV} names "
            "the token's PKCS#11 module. The PIN (asked only if the public key "
            f"needs it, and when signing) comes from {HSM_PIN_ENV} or a prompt. "
            "Then pass DIR/NAME.pub as --key to sign."
        ),
        epilog=example_epilog(
            "tufwaves keys import-hsm carol --dir keys --hsm-keyid 2",
            f"  (with {PKCS11_MODULE_ENV}=/usr/lib/x86_64-linux-gnu/libykcs11.so in the "
            "environment)",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hsm.add_argument("name", metavar="NAME", help="the key's name, also its file name")
    hsm.add_argument(
        "--dir", required=True, type=Path, metavar="DIR", help="where to write NAME.pub"
    )
    hsm.add_argument(
        "--hsm-keyid",
        type=int,
        default=None,
        metavar="N",
        help="the key's CKA_ID as an integer (default 2: YubiKey PIV slot 9c)",
    )
    hsm.add_argument(
        "--token-label", metavar="LABEL", help="the token's label, when several are present"
    )
    add_json_flag(hsm)
    hsm.set_defaults(func=_import_hsm)


def _generate(args: argparse.Namespace) -> int:
    for suffix in (".pub", ".key"):
        if (args.dir / f"{args.name}{suffix}").exists():
            raise StorageError(
                f"{args.dir / (args.name + suffix)} already exists; key files are never overwritten"
            )
    secret = passphrase(f"new key {args.name}", confirm=True)
    signer = generate_key(args.type)
    pub, priv = write_key_pair(args.name, args.dir, signer, secret)
    if args.json:
        emit_json(
            {
                "name": args.name,
                "keyid": signer.public_key.keyid,
                "public": str(pub),
                "private": str(priv),
            }
        )
    else:
        print(f"{pub}\n{priv}")
        info(f"keyid {signer.public_key.keyid}")
    return 0


def _import_uri(args: argparse.Namespace) -> int:
    try:
        pem = args.public_key.read_bytes()
    except OSError as e:
        raise StorageError(f"cannot read {args.public_key}: {e.strerror}") from None
    print(import_uri_key(args.name, args.dir, args.uri, pem))
    return 0


def _import_hsm(args: argparse.Namespace) -> int:
    uri, key = import_hsm_key(args.hsm_keyid, args.token_label)
    path = import_uri_key(args.name, args.dir, uri, public_pem(key))
    if args.json:
        emit_json({"name": args.name, "keyid": key.keyid, "public": str(path), "uri": uri})
    else:
        print(path)
        info(f"keyid {key.keyid}, signs through {uri}")
    return 0
