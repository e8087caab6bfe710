#!/bin/sh
# Container start-up: say plainly what would stop the Hailo from working, fetch models only when
# HAILO_IMMICH_FETCH_MODELS asks for it, then run the command (`hailo-immich serve` by default).
set -eu

warn() { echo "hailo-immich-entrypoint: $*" >&2; }

if [ -e /dev/hailo0 ]; then
    if ! { [ -r /dev/hailo0 ] && [ -w /dev/hailo0 ]; }; then
        gid=$(stat -c %g /dev/hailo0)
        warn "/dev/hailo0 (group $gid, mode $(stat -c %a /dev/hailo0)) cannot be opened by uid $(id -u):" \
             "add the device's group to the container (compose: group_add: [\"$gid\"]; docker run: --group-add $gid)"
    fi
    if [ -r /sys/module/hailo_pci/version ]; then
        driver=$(cat /sys/module/hailo_pci/version)
        library=$(python3 -c 'import importlib.metadata as m; print(m.version("hailort"))' 2>/dev/null || echo none)
        if [ "$library" = none ]; then
            warn "a Hailo device is present but this image has no HailoRT: rebuild with Hailo's wheel in hailort/" \
                 "and --build-arg HAILORT_VERSION=$driver"
        elif [ "$library" != "$driver" ]; then
            warn "HailoRT $library in the image, hailo_pci driver $driver on the host: they must be equal;" \
                 "rebuild with --build-arg HAILORT_VERSION=$driver (and that version's wheel)"
        fi
    fi
fi

if [ "${1:-}" = hailo-immich ] && [ "${2:-}" = serve ]; then
    case "${HAILO_IMMICH_FETCH_MODELS:-}" in
        "" | 0 | no | false | off) ;;
        1 | yes | true | on | default)
            hailo-immich fetch-models || warn "fetch-models failed; serving the models that are present" ;;
        *)
            recipes=""
            for recipe in $(echo "$HAILO_IMMICH_FETCH_MODELS" | tr ',' ' '); do recipes="$recipes --recipe $recipe"; done
            # shellcheck disable=SC2086  # one word per recipe id
            hailo-immich fetch-models $recipes || warn "fetch-models failed; serving the models that are present" ;;
    esac
fi

exec "$@"
