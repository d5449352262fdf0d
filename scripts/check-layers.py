#!/usr/bin/env python3
"""Keeps the layers of src/ one-way: a module may include only its own headers and those of the
modules it declares in its meson.build ("uses", and what they use in turn).

Run by the build for every module (meson.build): an include of a module above, or of one not
declared, fails the build with the file, the line and the rule. A function declared by hand
(`extern` in a .c file) to reach around the rule is refused too.

usage: check-layers.py MODULE SRCDIR STAMP DEPFILE [ALLOWED...]
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"([a-z_]+)/[^"]+"')
EXTERN_FN = re.compile(r'^\s*extern\s+(?!"C")[^;=]*\(')


def main():
    module, srcdir, stamp, depfile = sys.argv[1:5]
    allowed = set(sys.argv[5:]) | {module}
    moddir = os.path.join(srcdir, 'src', module)
    problems, seen = [], []
    for name in sorted(os.listdir(moddir)):
        if not name.endswith(('.c', '.h', '.cc')):
            continue
        path = os.path.join(moddir, name)
        seen.append(path)
        with open(path, encoding='utf-8') as f:
            for n, line in enumerate(f, 1):
                m = INCLUDE.match(line)
                if m and m.group(1) not in allowed:
                    problems.append(f'{path}:{n}: src/{module} includes "{m.group(1)}/..." but '
                                    f'may only use: {", ".join(sorted(allowed))} '
                                    f'(declared in src/{module}/meson.build)')
                if name.endswith(('.c', '.cc')) and EXTERN_FN.match(line):
                    problems.append(f'{path}:{n}: a function declared by hand in a .c file: '
                                    'include the header of the module that owns it')
    if problems:
        sys.stderr.write('\n'.join(problems) + '\n')
        return 1
    with open(stamp, 'w', encoding='utf-8') as f:
        f.write(f'/* src/{module}: layer rule checked */\n')
    with open(depfile, 'w', encoding='utf-8') as f:
        f.write(stamp + ': ' + ' '.join(p.replace(' ', '\\ ') for p in seen + [moddir]) + '\n')
    return 0


if __name__ == '__main__':
    sys.exit(main())
