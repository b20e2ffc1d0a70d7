# shellcheck shell=bash
# ELF facts with nothing but coreutils (od, dd, tail, head, sha256sum), where no binutils is: the node, a pod.
# elf_u <file> <offset> <bytes>: the little-endian unsigned integer there.
elf_u() {
  od -An -t "u$3" -j "$2" -N "$3" "$1" | tr -d ' \n'
}
# elf_section <file> <name>: "offset size" of the section named so (64-bit ELF), or nothing.
elf_section() {
  local file=$1 wanted=$2 shoff shentsize shnum shstrndx strtab i header name
  shoff=$(elf_u "$file" 40 8) shentsize=$(elf_u "$file" 58 2) shnum=$(elf_u "$file" 60 2)
  shstrndx=$(elf_u "$file" 62 2)
  strtab=$(elf_u "$file" $((shoff + shstrndx * shentsize + 24)) 8)
  for ((i = 0; i < shnum; i++)); do
    header=$((shoff + i * shentsize))
    name=$(dd if="$file" bs=1 skip=$((strtab + $(elf_u "$file" "$header" 4))) count=$((${#wanted} + 1)) 2>/dev/null |
      tr '\0' '\n' | head -n 1)
    if [ "$name" = "$wanted" ]; then
      echo "$(elf_u "$file" $((header + 24)) 8) $(elf_u "$file" $((header + 32)) 8)"
      return 0
    fi
  done
}
# elf_text_digest <file>: the SHA-256 of its .text section's bytes: the code, whatever the file's symbols,
# debug info or build-id.
elf_text_digest() {
  local section offset size
  section=$(elf_section "$1" .text)
  [ -n "$section" ] || return 1
  read -r offset size <<<"$section"
  tail -c +$((offset + 1)) "$1" | head -c "$size" | sha256sum | cut -d' ' -f1
}
# elf_first_load_vaddr <file>: p_vaddr of the PT_LOAD segment at file offset 0 (0 for a PIE).
elf_first_load_vaddr() {
  local phoff phentsize phnum i header
  phoff=$(elf_u "$1" 32 8) phentsize=$(elf_u "$1" 54 2) phnum=$(elf_u "$1" 56 2)
  for ((i = 0; i < phnum; i++)); do
    header=$((phoff + i * phentsize))
    if [ "$(elf_u "$1" "$header" 4)" = 1 ] && [ "$(elf_u "$1" $((header + 8)) 8)" = 0 ]; then
      elf_u "$1" $((header + 16)) 8
      return 0
    fi
  done
  return 1
}
# elf_is_64 <file>: whether it is a 64-bit ELF file (what the other functions read).
elf_is_64() {
  [ "$(od -An -tx1 -N 5 "$1" 2>/dev/null | tr -d ' \n')" = 7f454c4602 ]
}
# elf_build_id <file>: its GNU build-id, hex, or nothing.
elf_build_id() {
  local section offset size namesz descsz
  elf_is_64 "$1" || return 0
  section=$(elf_section "$1" .note.gnu.build-id)
  [ -n "$section" ] || return 0
  read -r offset size <<<"$section"
  namesz=$(elf_u "$1" "$offset" 4) descsz=$(elf_u "$1" $((offset + 4)) 4)
  od -An -v -tx1 -j $((offset + 12 + (namesz + 3) / 4 * 4)) -N "$descsz" "$1" | tr -d ' \n'
}
# lldb_uuid <build-id hex>: the build-id as lldb names a module's UUID (uppercase, 8-4-4-4-12[-8]).
lldb_uuid() {
  local id=${1^^}
  printf '%s-%s-%s-%s-%s' "${id:0:8}" "${id:8:4}" "${id:12:4}" "${id:16:4}" "${id:20:12}"
  if [ ${#id} -gt 32 ]; then printf -- '-%s' "${id:32}"; fi
  echo
}
