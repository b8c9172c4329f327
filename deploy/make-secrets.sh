#!/bin/sh
# Make the secrets deploy/compose.yaml reads (docs/security.md), into deploy/secrets/ or the directory given:
#
#   deploy/make-secrets.sh [DIR]
#
#   ca.pem              the CA that signs the broker and worker certificates (clients trust it)
#   ca-key.pem          its private key: keep it off the machines that run kpimon
#   kafka-keystore.pem  the broker's private key and certificate chain (Kafka ssl.keystore.type=PEM),
#                       for the hosts kafka and localhost
#   kafka-password      the SCRAM-SHA-512 password of the Kafka user kpimon
#   web.pem, web-key.pem  the workers' HTTPS certificate (worker-1, worker-2, localhost, 127.0.0.1) and key
#   web-password        the basic-auth password of /metrics and /ready (user prometheus)
#   dead-letter-key     the HMAC key that pseudonymises user ids in the dead letters
#
# Existing files are kept, so running it again does not change passwords under running services.
# Needs openssl 1.1.1 or newer.
set -eu

dir=${1:-"$(dirname "$0")/secrets"}
mkdir -p "$dir"
cd "$dir"
umask 077
days=825

secret() {  # a random password or key, 32 bytes as hex, written once
    [ -s "$1" ] || openssl rand -hex 32 > "$1"
}

leaf() {  # leaf NAME SUBJECT SAN: a key and a certificate signed by the CA
    [ -s "$1.pem" ] && return 0
    openssl req -new -newkey rsa:2048 -nodes -keyout "$1-key.pem" -subj "$2" -out "$1.csr" 2>/dev/null
    printf 'subjectAltName=%s\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n' "$3" \
        > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days "$days" -sha256 \
        -extfile "$1.ext" -out "$1.pem" 2>/dev/null
    cat ca.pem >> "$1.pem"  # the chain: leaf, then CA
    rm -f "$1.csr" "$1.ext"
}

if [ ! -s ca.pem ]; then
    openssl req -x509 -new -newkey rsa:3072 -nodes -keyout ca-key.pem -subj "/CN=kpimon CA" -days "$days" \
        -sha256 -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem 2>/dev/null
fi
leaf kafka "/CN=kafka" "DNS:kafka,DNS:localhost,IP:127.0.0.1"
[ -s kafka-keystore.pem ] || cat kafka-key.pem kafka.pem > kafka-keystore.pem  # PKCS#8 key, then the chain
leaf web "/CN=kpimon worker" "DNS:worker-1,DNS:worker-2,DNS:localhost,IP:127.0.0.1"
secret kafka-password
secret web-password
secret dead-letter-key
# The containers run as other users than yours (kpimon 10001, Prometheus nobody, Kafka appuser) and compose
# mounts these files as they are: readable by all here. ca-key.pem stays private.
chmod 644 ca.pem kafka-keystore.pem kafka-password web.pem web-key.pem web-password dead-letter-key
chmod 600 ca-key.pem kafka-key.pem
echo "secrets in $(pwd)"
