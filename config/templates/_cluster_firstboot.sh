#!/bin/sh
# netdeploy first boot of {{ node.hostname }}: {{ "create" if cluster.formation.role == "create" else "join" }} cluster {{ cluster.name }} ({{ cluster.formation.kind }}),
# then report to netdeploy with the cluster's own member list ({{ cluster.formation.members_command }}).
# Runs once (the marker file), after netdeploy released this node: held nodes never boot.
[ -e /var/lib/netdeploy/cluster-formed ] && exit 0
mkdir -p /var/lib/netdeploy
exec >>/var/log/netdeploy-cluster.log 2>&1
step=0
{% for command in cluster.formation.commands %}
step=$((step + 1))
{{ command }} || echo "netdeploy: cluster step $step failed"
{% endfor %}
# up to 10 minutes for the cluster to list this node online
ok=0
for try in $(seq 1 60); do
  if {{ cluster.formation.members_command }} >/var/lib/netdeploy/members.txt 2>&1 \
      && grep -Eq "Online:.* {{ node.hostname }}( |\])" /var/lib/netdeploy/members.txt; then
    ok=1
    break
  fi
  sleep 10
done
python3 - "{{ netdeploy.ready_kind }}" "$ok" >/var/lib/netdeploy/report.json <<'PY'
import json, sys
kind, ok = sys.argv[1], sys.argv[2] == "1"
members = open("/var/lib/netdeploy/members.txt", errors="replace").read()[-60000:]
if kind == "health":
    body = {"healthy": ok, "message": "pacemaker: this node online" if ok else "pacemaker: this node not online after 10 minutes"}
else:
    body = {"state": "joined" if ok else "failed", "message": "pacemaker: joined" if ok else "pacemaker: not online after 10 minutes"}
if ok:
    body.update(source="{{ cluster.formation.members_source }}", output=members)
print(json.dumps(body))
PY
for try in 1 2 3 4 5; do
  curl -fsS -m 15 -X POST -H "Content-Type: application/json" -H "Authorization: Bearer {{ netdeploy.token }}" --data-binary @/var/lib/netdeploy/report.json {{ netdeploy.ready_url }} && break
  sleep $((try * 5))
done
touch /var/lib/netdeploy/cluster-formed
