#!/usr/bin/env bash
# Installs Strongroom on Debian 12 (bookworm), as root; safe to run again
# (an upgrade is the same command after `git pull`).
#
#   deploy/install-debian.sh                  # the whole install, default paths
#   deploy/install-debian.sh --packages-only  # only the Debian packages Strongroom runs with (.ci/run)
#   deploy/install-debian.sh --help           # every option
#
# What it does, each step skipped when already done:
#   1. the Debian packages: Python 3 with venv, the PostgreSQL client tools
#      (pg_dump, pg_restore, psql, pg_basebackup, pg_receivewal), zstd for
#      reading unencrypted .zst objects by hand, CA certificates, time zones;
#   2. the service user and group (a system user, no shell, home = data directory);
#   3. the code in the install directory, owned by root and only readable by
#      the service (copied from this checkout, or used in place when this
#      checkout is the install directory);
#   4. the data directory and the key directory, 0700, the service user's;
#   5. the settings: <config dir>/strongroom.env (0640 root:<group>) and a
#      generated secret key in <config dir>/secret_key (0640 root:<group>),
#      named by SECRET_KEY_FILE; an existing file is left as it is;
#   6. the virtualenv with requirements.txt (again only when that file changed);
#   7. `manage.py migrate` as the service user with those settings;
#   8. the systemd units, where systemd runs (or into --systemd-dir).
# Static files need no collectstatic: WhiteNoise serves them from the code's
# folders (backupsite/settings.py, WHITENOISE_USE_FINDERS).
set -euo pipefail

SOURCE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# The packages Strongroom itself runs with (pg_dump and the MariaDB/MySQL
# client tools, mariadb-dump and mariadb, for those sources). The tests add
# their own (.ci/run).
PACKAGES=(python3 python3-venv postgresql-client mariadb-client zstd ca-certificates tzdata)

service_user=strongroom
service_uid=
app_dir=/opt/strongroom
data_dir=/var/lib/strongroom
key_dir=
config_dir=/etc/strongroom
python=/usr/bin/python3
systemd_dir=
packages_only=no
skip_packages=no
write_config=yes
migrate=yes
systemd=auto

usage() {
  cat <<EOF
Usage: $0 [options]

  --packages-only       install the Debian packages and stop
  --skip-packages       do not look at the Debian packages (they are installed already)
  --user NAME           service user and group (default: $service_user)
  --uid N               uid and gid for a new service user (default: the next free system id)
  --app-dir DIR         where the code and its .venv live (default: $app_dir)
  --data-dir DIR        STRONGROOM_DATA_DIR, 0700 (default: $data_dir)
  --key-dir DIR         STRONGROOM_KEY_DIR, 0700 (default: <data dir>/keys)
  --config-dir DIR      strongroom.env and secret_key (default: $config_dir)
  --python PATH         the Python that makes the virtualenv (default: $python)
  --no-config           write no strongroom.env or secret key (a container's environment gives them)
  --no-migrate          do not migrate the metadata database (a container migrates when it starts)
  --no-systemd          install no systemd units
  --systemd-dir DIR     install the units into DIR, whether systemd runs or not
                        (default: /etc/systemd/system, only where systemd runs)

pip reads its usual settings (PIP_INDEX_URL, PIP_FIND_LINKS, PIP_NO_CACHE_DIR, pip.conf).
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --packages-only) packages_only=yes ;;
    --skip-packages) skip_packages=yes ;;
    --user) service_user=$2; shift ;;
    --uid) service_uid=$2; shift ;;
    --app-dir) app_dir=$2; shift ;;
    --data-dir) data_dir=$2; shift ;;
    --key-dir) key_dir=$2; shift ;;
    --config-dir) config_dir=$2; shift ;;
    --python) python=$2; shift ;;
    --no-config) write_config=no ;;
    --no-migrate) migrate=no ;;
    --no-systemd) systemd=no ;;
    --systemd-dir) systemd=yes; systemd_dir=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "Unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { echo "==> $*"; }
die() { echo "install-debian.sh: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run it as root: it installs packages, makes a user and writes to $app_dir and $data_dir"
# Root makes the code and the virtualenv readable by the service user; what
# must stay private gets its mode set below.
umask 022

install_packages() {
  local missing=() package
  for package in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    say "Debian packages: all there (${PACKAGES[*]})"
    return
  fi
  say "Installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Waits for another apt (unattended-upgrades on a fresh host) rather than failing.
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}"
}

if [ "$skip_packages" = no ]; then
  install_packages
fi
if [ "$packages_only" = yes ]; then
  exit 0
fi

absolute() { realpath -m -- "$1"; }
app_dir=$(absolute "$app_dir")
data_dir=$(absolute "$data_dir")
key_dir=$(absolute "${key_dir:-$data_dir/keys}")
config_dir=$(absolute "$config_dir")
env_file=$config_dir/strongroom.env
secret_file=$config_dir/secret_key
for dir in "$app_dir" "$data_dir" "$key_dir" "$config_dir"; do
  [ "$dir" != / ] || die "/ is not a place for Strongroom"
done
[ -x "$python" ] || die "$python is not there (--python)"

# 2. The service user: a system user with no shell, its home the data directory.
if ! getent group "$service_user" >/dev/null; then
  say "Creating the group $service_user"
  groupadd --system ${service_uid:+--gid "$service_uid"} "$service_user"
fi
if ! getent passwd "$service_user" >/dev/null; then
  say "Creating the service user $service_user"
  useradd --system ${service_uid:+--uid "$service_uid"} --gid "$service_user" --home-dir "$data_dir" \
    --no-create-home --shell /usr/sbin/nologin --comment "Strongroom" "$service_user"
fi

# 3. The code: root's, readable by the service, which never writes to it.
if [ "$(absolute "$SOURCE_DIR")" = "$app_dir" ]; then
  say "Code: used in place in $app_dir"
else
  # Copied afresh each time, so an upgrade leaves no file the new version
  # removed (an old migration would be taken as one of the new). The folder is
  # emptied only when it holds Strongroom or nothing, never some other folder.
  if [ -d "$app_dir" ] && [ -n "$(ls -A "$app_dir")" ] && [ ! -f "$app_dir/manage.py" ]; then
    die "$app_dir holds something that is not Strongroom; choose another --app-dir"
  fi
  say "Code: copying $SOURCE_DIR to $app_dir"
  mkdir -p "$app_dir"
  find "$app_dir" -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +
  tar -C "$SOURCE_DIR" -cf - \
    --exclude=./.git --exclude=./.venv --exclude=./data --exclude=./node_modules \
    --exclude=__pycache__ --exclude=.mypy_cache --exclude=.ruff_cache --exclude=.pytest_cache . |
    tar -C "$app_dir" -xf - --no-same-owner --no-same-permissions
fi
chown -R root:root "$app_dir"
chmod -R u+rwX,go+rX,go-w "$app_dir"

# 4. Where Strongroom writes: the service user's alone.
private_dir() {
  mkdir -p "$1"
  chown "$service_user:$service_user" "$1"
  chmod 0700 "$1"
}
say "Data directory $data_dir and key directory $key_dir (0700, $service_user's)"
private_dir "$data_dir"
private_dir "$key_dir"

# 5. The settings, for systemd's EnvironmentFile= and for the commands below.
if [ "$write_config" = yes ]; then
  install -d -m 0750 -o root -g "$service_user" "$config_dir"
  if [ ! -f "$secret_file" ]; then
    say "Generating the secret key into $secret_file"
    # The same file on every host of one metadata database (docs/DEPLOYMENT.md).
    (umask 077 && "$python" -c 'import secrets; print(secrets.token_urlsafe(50))' >"$secret_file.new")
    mv "$secret_file.new" "$secret_file"
  fi
  chown "root:$service_user" "$secret_file"
  chmod 0640 "$secret_file"
  if [ ! -f "$env_file" ]; then
    say "Writing $env_file"
    (umask 077 && cat >"$env_file.new" <<EOF
# Strongroom's settings: one NAME=value a line, every one in the README's
# Configuration table; NAME_FILE=/path reads a secret from a file instead.
# Written by deploy/install-debian.sh, which leaves it alone from now on.
STRONGROOM_DATA_DIR=$data_dir
STRONGROOM_KEY_DIR=$key_dir
SECRET_KEY_FILE=$secret_file
STRONGROOM_BIND=127.0.0.1:8000
# ALLOWED_HOSTS=backups.example.org
# SECURE_COOKIES=1
# DATABASE_URL=postgresql://strongroom@db.example.org/strongroom
# REDIS_URL=redis://redis.example.org:6379/0
# LOG_FORMAT=json
EOF
    )
    mv "$env_file.new" "$env_file"
  fi
  chown "root:$service_user" "$env_file"
  chmod 0640 "$env_file"
fi

# 6. The virtualenv. A stamp of requirements.txt and the Python makes a second
# run skip pip when nothing changed.
venv=$app_dir/.venv
stamp=$(cat "$app_dir/requirements.txt" <("$python" --version) | sha256sum | cut -d' ' -f1)
if [ "$(cat "$venv/.strongroom-installed" 2>/dev/null)" != "$stamp" ]; then
  say "Virtualenv $venv with requirements.txt"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$app_dir/requirements.txt"
  echo "$stamp" >"$venv/.strongroom-installed"
else
  say "Virtualenv $venv: up to date"
fi

# 7. The metadata database, migrated as the service user with the settings of
# the env file and nothing of root's environment.
as_service() {
  local settings=() line
  if [ -f "$env_file" ]; then
    while IFS= read -r line || [ -n "$line" ]; do
      case "$line" in '' | '#'*) continue ;; esac
      settings+=("$line")
    done <"$env_file"
  fi
  (cd "$app_dir" && runuser -u "$service_user" -- env -i PATH=/usr/bin:/bin HOME="$data_dir" LANG=C.UTF-8 \
    STRONGROOM_DATA_DIR="$data_dir" STRONGROOM_KEY_DIR="$key_dir" "${settings[@]}" "$@")
}
if [ "$migrate" = yes ]; then
  say "Migrating the metadata database (as $service_user)"
  as_service "$venv/bin/python" manage.py migrate --noinput --verbosity 0
fi

# 8. systemd units, with this install's paths and user.
if [ "$systemd" = auto ]; then
  if [ -d /run/systemd/system ]; then systemd=yes; else systemd=no; fi
  systemd_dir=/etc/systemd/system
fi
if [ "$systemd" = yes ]; then
  say "systemd units into $systemd_dir"
  mkdir -p "$systemd_dir"
  writable=$data_dir
  case "$key_dir/" in "$data_dir"/*) ;; *) writable="$data_dir $key_dir" ;; esac
  # Paths as sed replacements (| is sed's delimiter here, & the match).
  quote() { printf '%s' "$1" | sed -e 's/[|&\\]/\\&/g'; }
  for unit in "$app_dir"/deploy/systemd/*; do
    sed -e "s|/opt/strongroom|$(quote "$app_dir")|g" \
      -e "s|/etc/strongroom/strongroom.env|$(quote "$env_file")|g" \
      -e "s|^ReadWritePaths=/var/lib/strongroom|ReadWritePaths=$(quote "$writable")|" \
      -e "/^ReadWritePaths=/!s|/var/lib/strongroom|$(quote "$data_dir")|g" \
      -e "s|^User=strongroom\$|User=$(quote "$service_user")|" \
      -e "s|^Group=strongroom\$|Group=$(quote "$service_user")|" \
      "$unit" >"$systemd_dir/$(basename "$unit")"
    chmod 0644 "$systemd_dir/$(basename "$unit")"
  done
  if [ -d /run/systemd/system ] && [ "$systemd_dir" = /etc/systemd/system ]; then
    systemctl daemon-reload
  fi
else
  say "systemd units: not installed (--no-systemd, or systemd does not run here)"
fi

say "Strongroom is installed in $app_dir. Next, as in docs/DEPLOYMENT.md:"
echo "    settings:  $env_file"
echo "    first start (master key, administrator):"
echo "      cd $app_dir && runuser -u $service_user -- env \$(grep -v '^#' $env_file | xargs) .venv/bin/python manage.py bootstrap"
echo "    start:     systemctl enable --now strongroom.target"
