#!/usr/bin/env bash
# `rpctui build PROFILE` for a GPU backend on a real node (issue 13), on the `device` machine:
# the machine is its own node over SSH (Debian 12's sshd on 127.0.0.1:2222, a key made here),
# the profile asks for mainline built there for BACKEND (vulkan, the default: the node's env
# naming Debian 13's headers and glslc; or cuda: the env's PATH naming the driver's and the
# toolkit's folders, which a non-interactive SSH login leaves out); then `rpctui run` on that
# node's own build with two rpc-servers on the GPU.
#     BACKEND=cuda bash bench/device_node_build.sh
# Carry .dev2 (made as bench/device_prep.sh makes .dev, plus ssh/: the
# openssh debs, whl/: asyncssh and cryptography for Python 3.12, and a slim sdist of the
# mainline tree that rpctui sends to the node).
set -uo pipefail
source bench/device_dev2.sh
for f in .dev2/deb/*.deb; do dpkg -x "$f" /tmp/vk; done
for f in .dev2/gl/*.deb; do dpkg -x "$f" /; done; ldconfig
for f in .dev2/ssh/*.deb; do dpkg -x "$f" /tmp/ssh; done
# sshd on loopback, root's key
mkdir -p /run/sshd /root/.ssh && chmod 700 /root/.ssh
grep -q '^sshd:' /etc/passwd || echo 'sshd:x:74:65534::/run/sshd:/usr/sbin/nologin' >> /etc/passwd
[ -f /tmp/ssh/host_key ] || LD_LIBRARY_PATH=/tmp/ssh/lib/x86_64-linux-gnu:/tmp/ssh/usr/lib/x86_64-linux-gnu /tmp/ssh/usr/bin/ssh-keygen -q -t ed25519 -N '' -f /tmp/ssh/host_key
[ -f /root/.ssh/id_ed25519 ] || LD_LIBRARY_PATH=/tmp/ssh/lib/x86_64-linux-gnu:/tmp/ssh/usr/lib/x86_64-linux-gnu /tmp/ssh/usr/bin/ssh-keygen -q -t ed25519 -N '' -f /root/.ssh/id_ed25519
cp /root/.ssh/id_ed25519.pub /root/.ssh/authorized_keys; chmod 600 /root/.ssh/authorized_keys
cat > /tmp/ssh/sshd_config <<CFG
Port 2222
ListenAddress 127.0.0.1
HostKey /tmp/ssh/host_key
PidFile /tmp/ssh/sshd.pid
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
AuthorizedKeysFile /root/.ssh/authorized_keys
Subsystem sftp /tmp/ssh/usr/lib/openssh/sftp-server
CFG
pkill -f "sshd -f /tmp/ssh/sshd_config"; sleep 0.5
# Debian 12's sshd and its libraries (libwrap and the rest), beside the image's own
sshlib=/tmp/ssh/lib/x86_64-linux-gnu:/tmp/ssh/usr/lib/x86_64-linux-gnu
LD_LIBRARY_PATH=$sshlib /tmp/ssh/usr/sbin/sshd -f /tmp/ssh/sshd_config -E /tmp/ssh/log || {
  cat /tmp/ssh/log; exit 1; }
echo "[127.0.0.1]:2222 $(cut -d' ' -f1,2 /tmp/ssh/host_key.pub)" > /root/.ssh/known_hosts
LD_LIBRARY_PATH=$sshlib /tmp/ssh/usr/bin/ssh -p 2222 -o BatchMode=yes root@127.0.0.1 \
  'echo ssh ok; nproc' 2>&1 | tee "$out/ssh.txt"; tail -5 /tmp/ssh/log
backend=${BACKEND:-vulkan}
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ "$backend" = cuda ]; then
  device=CUDA0
  smi=$(command -v nvidia-smi); nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  echo "nvidia-smi: $smi; nvcc: $nvcc" | tee "$out/tools.txt"
  "$smi" --query-gpu=compute_cap --format=csv,noheader | tee "$out/compute_cap.txt"
  "$nvcc" --version | tail -2 | tee -a "$out/tools.txt"
  env="PATH = \"$(dirname "$smi"):$(dirname "$nvcc"):$PATH\""
else
  device=Vulkan0
  env="VULKAN_SDK = \"/tmp/vk/usr\", PATH = \"/tmp/vk/usr/bin:$PATH\", CMAKE_PREFIX_PATH = \"/tmp/vk/usr\", LD_LIBRARY_PATH = \"/tmp/vk/usr/lib/x86_64-linux-gnu\", VK_DRIVER_FILES = \"$icd\""
fi
model=$(python3 -c "from rpctui.llama.tinymodel import ensure_model; print(ensure_model('tiny'))")
cat > /tmp/node.toml <<TOML
name = "$backend-node-build"
[[nodes]]
name = "gpu"
host = "127.0.0.1"
ssh_port = 2222
user = "root"
main = true
build = "mainline"
backend = "$backend"
build_dir = "/tmp/nodebuild"
python = "python3"
env = { $env }
[[nodes.servers]]
port = 50052
devices = ["$device"]
[[nodes.servers]]
port = 50053
devices = ["$device"]
[job]
model = "$model"
ngl = 99
prompt_tokens = [512]
gen_tokens = [32]
repetitions = 1
TOML
t=$(date +%s)
python3 -m rpctui.cli.main build /tmp/node.toml 2>&1 | grep -v "step [0-9]*/[0-9]* *[0-9]*%$" | tail -25 | tee "$out/build.txt"
echo "node build: $(( $(date +%s) - t )) s" | tee -a "$out/build.txt"
python3 -m rpctui.cli.main build /tmp/node.toml 2>&1 | tail -3 | tee -a "$out/build.txt"
python3 -m rpctui.cli.main run /tmp/node.toml 2>&1 | tail -25 | tee "$out/run.txt"
grep -h '"cmake"' -A20 /tmp/nodebuild/mainline/BUILD.json | tr -d '\n ' | head -c 900 > "$out/record.txt"
