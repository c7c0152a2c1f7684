#!/bin/bash
# realm.sh - a throwaway MIT Kerberos realm for tests (never touches /etc/krb5.conf).
#
#   realm.sh DIR        create realm EASGATE.TEST under DIR, start krb5kdc on 127.0.0.1 (a free
#                       TCP port), write DIR/env and print its path
#   realm.sh stop DIR   stop that KDC
#
# DIR/env holds KEY=VALUE lines (no quoting; source it or parse it):
#   KRB5_CONFIG, KRB5_KDC_PROFILE   the realm's own krb5.conf / kdc.conf
#   EG_KRB_REALM, EG_KRB_PORT, EG_KRB_PID
#   EG_KRB_USER, EG_KRB_PASSWORD    easgate@EASGATE.TEST (password principal)
#   EG_KRB_CLIENT_KEYTAB            its keys (client keytab, password stays valid)
#   EG_KRB_SHORT_USER, EG_KRB_SHORT_PASSWORD  short@EASGATE.TEST, tickets live 5 seconds
#   EG_KRB_SERVICE, EG_KRB_SERVICE_KEYTAB     HTTP/localhost@EASGATE.TEST and its keytab
#   NTLM_USER_FILE, EG_NTLM_DOMAIN, EG_NTLM_USER, EG_NTLM_PASSWORD  gss-ntlmssp users file
set -euo pipefail
PATH=/usr/sbin:/sbin:$PATH
REALM=EASGATE.TEST

if [ "${1:-}" = stop ]; then
    dir=${2:?usage: realm.sh stop DIR}
    if [ -f "$dir/kdc.pid" ]; then
        pid=$(cat "$dir/kdc.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        rm -f "$dir/kdc.pid"
    fi
    exit 0
fi

dir=${1:?usage: realm.sh DIR | realm.sh stop DIR}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
# a realm already running in DIR is replaced
[ -f "$dir/kdc.pid" ] && "$0" stop "$dir"
command -v krb5kdc >/dev/null || { echo "realm.sh: krb5kdc not installed" >&2; exit 77; }

rnd() { head -c 18 /dev/urandom | base64 | tr -d '/+='; }
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

port=$(free_port)
master=$(rnd)
pw=$(rnd)
shortpw=$(rnd)
ntlmpw=$(rnd)

cat >"$dir/krb5.conf" <<CONF
[libdefaults]
    default_realm = $REALM
    dns_lookup_kdc = false
    dns_lookup_realm = false
    dns_canonicalize_hostname = false
    rdns = false
    udp_preference_limit = 1
    kdc_timesync = 0
    ignore_acceptor_hostname = true
    default_ccache_name = MEMORY:eg-test-default
    default_keytab_name = FILE:$dir/none.keytab
    kdc_timeout = 3000
    max_retries = 1
    permitted_enctypes = aes256-cts-hmac-sha1-96 aes128-cts-hmac-sha1-96
[realms]
    $REALM = {
        kdc = 127.0.0.1:$port
    }
[domain_realm]
    localhost = $REALM
    .localhost = $REALM
CONF

cat >"$dir/kdc.conf" <<CONF
[kdcdefaults]
    kdc_listen = 127.0.0.1:$port
    kdc_tcp_listen = 127.0.0.1:$port
[realms]
    $REALM = {
        database_name = $dir/principal
        key_stash_file = $dir/stash
        acl_file = $dir/kadm5.acl
        max_life = 10h
        max_renewable_life = 0
        master_key_type = aes256-cts-hmac-sha1-96
        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
        kdc_listen = 127.0.0.1:$port
        kdc_tcp_listen = 127.0.0.1:$port
    }
[logging]
    kdc = FILE:$dir/kdc.log
CONF
: >"$dir/kadm5.acl"

export KRB5_CONFIG="$dir/krb5.conf" KRB5_KDC_PROFILE="$dir/kdc.conf"
rm -f "$dir"/principal* "$dir/stash" "$dir"/*.keytab
kdb5_util -r "$REALM" create -s -P "$master" >"$dir/kdb5_util.log" 2>&1
kadmin.local -r "$REALM" >"$dir/kadmin.log" 2>&1 <<KADM
addprinc -pw $pw easgate
addprinc -pw $shortpw -maxlife "5 seconds" short
addprinc -randkey HTTP/localhost
ktadd -k $dir/http.keytab HTTP/localhost
ktadd -k $dir/client.keytab -norandkey easgate
KADM
[ -s "$dir/http.keytab" ] && [ -s "$dir/client.keytab" ] ||
    { echo "realm.sh: kadmin.local failed, see $dir/kadmin.log" >&2; exit 1; }

printf 'EASGATE:ntlmuser:%s\n' "$ntlmpw" >"$dir/ntlm_users"
chmod 600 "$dir/ntlm_users" "$dir"/*.keytab

krb5kdc -n -P "$dir/kdc.pid" >>"$dir/kdc.log" 2>&1 &
kpid=$!
for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
    kill -0 "$kpid" 2>/dev/null || { echo "realm.sh: krb5kdc exited, see $dir/kdc.log" >&2; exit 1; }
    sleep 0.02
done
echo "$kpid" >"$dir/kdc.pid"
kill -0 "$kpid" 2>/dev/null || { echo "realm.sh: krb5kdc did not start, see $dir/kdc.log" >&2; exit 1; }

cat >"$dir/env" <<ENV
KRB5_CONFIG=$dir/krb5.conf
KRB5_KDC_PROFILE=$dir/kdc.conf
EG_KRB_REALM=$REALM
EG_KRB_PORT=$port
EG_KRB_PID=$kpid
EG_KRB_USER=easgate@$REALM
EG_KRB_PASSWORD=$pw
EG_KRB_CLIENT_KEYTAB=$dir/client.keytab
EG_KRB_SHORT_USER=short@$REALM
EG_KRB_SHORT_PASSWORD=$shortpw
EG_KRB_SERVICE=HTTP/localhost@$REALM
EG_KRB_SERVICE_KEYTAB=$dir/http.keytab
NTLM_USER_FILE=$dir/ntlm_users
EG_NTLM_DOMAIN=EASGATE
EG_NTLM_USER=EASGATE\\\\ntlmuser
EG_NTLM_PASSWORD=$ntlmpw
ENV
echo "$dir/env"
