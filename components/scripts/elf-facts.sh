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
