"""Tests for codekiln.data.licenses."""

from __future__ import annotations

import email.message
import importlib.metadata
import json
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codekiln.data import licenses
from codekiln.data.license_detect import detect_license_text, detect_repo_license, distribution_license
from codekiln.data.licenses import PERMISSIVE, license_allowed, normalize_license, to_expression

# --- license texts (real wording; long ones cut after their distinctive part) --

MIT_TEXT = """MIT License

Copyright (c) 2023 Example Author

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""

MIT0_TEXT = """MIT No Attribution

Copyright 2023 Example Author

Permission is hereby granted, free of charge, to any person obtaining a copy of this
software and associated documentation files (the "Software"), to deal in the Software
without restriction, including without limitation the rights to use, copy, modify,
merge, publish, distribute, sublicense, and/or sell copies of the Software, and to
permit persons to whom the Software is furnished to do so.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED,
INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A
PARTICULAR PURPOSE AND NONINFRINGEMENT.
"""

X11_TEXT = MIT_TEXT.replace("MIT License", "X11 License") + """
Except as contained in this notice, the name of the X Consortium shall not be
used in advertising or otherwise to promote the sale, use or other dealings in
this Software without prior written authorization from the X Consortium.
"""

APACHE_TEXT = """
                                 Apache License
                           Version 2.0, January 2004
                        http://www.apache.org/licenses/

   TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION

   1. Definitions.

      "License" shall mean the terms and conditions for use, reproduction,
      and distribution as defined by Sections 1 through 9 of this document.

      "Licensor" shall mean the copyright owner or entity authorized by
      the copyright owner that is granting the License.
"""

GPL3_TEXT = """                    GNU GENERAL PUBLIC LICENSE
                       Version 3, 29 June 2007

 Copyright (C) 2007 Free Software Foundation, Inc. <https://fsf.org/>
 Everyone is permitted to copy and distribute verbatim copies
 of this license document, but changing it is not allowed.

                            Preamble

  The GNU General Public License is a free, copyleft license for
software and other kinds of works.

                       TERMS AND CONDITIONS

  13. Use with the GNU Affero General Public License.

    This program is free software: you can redistribute it and/or modify
    it under the terms of the GNU General Public License as published by
    the Free Software Foundation, either version 3 of the License, or
    (at your option) any later version.

library.  If this is what you want to do, use the GNU Lesser General
Public License instead of this License.  But first, please read
<https://www.gnu.org/licenses/why-not-lgpl.html>.
"""

GPL2_TEXT = """                    GNU GENERAL PUBLIC LICENSE
                       Version 2, June 1991

 Copyright (C) 1989, 1991 Free Software Foundation, Inc.,
 51 Franklin Street, Fifth Floor, Boston, MA 02110-1301 USA
 Everyone is permitted to copy and distribute verbatim copies
 of this license document, but changing it is not allowed.

                    GNU GENERAL PUBLIC LICENSE
   TERMS AND CONDITIONS FOR COPYING, DISTRIBUTION AND MODIFICATION
"""

LGPL21_TEXT = """                  GNU LESSER GENERAL PUBLIC LICENSE
                       Version 2.1, February 1999

 Copyright (C) 1991, 1999 Free Software Foundation, Inc.
 51 Franklin Street, Fifth Floor, Boston, MA  02110-1301  USA
 Everyone is permitted to copy and distribute verbatim copies
 of this license document, but changing it is not allowed.

[This is the first released version of the Lesser GPL.  It also counts
 as the successor of the GNU Library Public License, version 2, hence
 the version number 2.1.]

                  GNU LESSER GENERAL PUBLIC LICENSE
   TERMS AND CONDITIONS FOR COPYING, DISTRIBUTION AND MODIFICATION
"""

LGPL3_TEXT = """                   GNU LESSER GENERAL PUBLIC LICENSE
                       Version 3, 29 June 2007

 Copyright (C) 2007 Free Software Foundation, Inc. <https://fsf.org/>
 Everyone is permitted to copy and distribute verbatim copies
 of this license document, but changing it is not allowed.

  This version of the GNU Lesser General Public License incorporates
the terms and conditions of version 3 of the GNU General Public
License, supplemented by the additional permissions listed below.
"""

AGPL3_TEXT = """                    GNU AFFERO GENERAL PUBLIC LICENSE
                       Version 3, 19 November 2007

 Copyright (C) 2007 Free Software Foundation, Inc. <https://fsf.org/>

  The GNU Affero General Public License is a free, copyleft license for
software and other kinds of works, specifically designed to ensure
cooperation with the community in the case of network server software.

                       TERMS AND CONDITIONS
"""

GPL_NOTICE = """Copyright (C) 2021 Example Author

This program is free software: you can redistribute it and/or modify
it under the terms of the GNU General Public License as published by
the Free Software Foundation, either version 3 of the License, or
(at your option) any later version.
"""

MPL2_TEXT = """Mozilla Public License Version 2.0
==================================

1. Definitions
--------------

1.1. "Contributor"
    means each individual or legal entity that creates, contributes to
    the creation of, or owns Covered Software.
"""

_BSD_HEAD = """Copyright (c) 2020, Example Org
All rights reserved.

Redistribution and use in source and binary forms, with or without
modification, are permitted provided that the following conditions are met:

1. Redistributions of source code must retain the above copyright notice, this
   list of conditions and the following disclaimer.

2. Redistributions in binary form must reproduce the above copyright notice,
   this list of conditions and the following disclaimer in the documentation
   and/or other materials provided with the distribution.
"""
_BSD_TAIL = """
THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"
AND ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE
IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
DISCLAIMED.
"""
BSD2_TEXT = "BSD 2-Clause License\n\n" + _BSD_HEAD + _BSD_TAIL
BSD3_TEXT = "BSD 3-Clause License\n\n" + _BSD_HEAD + """
3. Neither the name of the copyright holder nor the names of its
   contributors may be used to endorse or promote products derived from
   this software without specific prior written permission.
""" + _BSD_TAIL
BSD4_TEXT = _BSD_HEAD + """
3. All advertising materials mentioning features or use of this software
   must display the following acknowledgement: This product includes
   software developed by the Example Org.

4. Neither the name of the Example Org nor the names of its contributors
   may be used to endorse or promote products derived from this software
   without specific prior written permission.
""" + _BSD_TAIL

ISC_TEXT = """ISC License

Copyright (c) 2004-2010 by Internet Systems Consortium, Inc. ("ISC")

Permission to use, copy, modify, and/or distribute this software for any
purpose with or without fee is hereby granted, provided that the above
copyright notice and this permission notice appear in all copies.

THE SOFTWARE IS PROVIDED "AS IS" AND THE AUTHOR DISCLAIMS ALL WARRANTIES
WITH REGARD TO THIS SOFTWARE INCLUDING ALL IMPLIED WARRANTIES OF
MERCHANTABILITY AND FITNESS.
"""

ZERO_BSD_TEXT = """Copyright (C) 2006 by Rob Landley <rob@landley.net>

Permission to use, copy, modify, and/or distribute this software for any
purpose with or without fee is hereby granted.

THE SOFTWARE IS PROVIDED "AS IS" AND THE AUTHOR DISCLAIMS ALL WARRANTIES
WITH REGARD TO THIS SOFTWARE INCLUDING ALL IMPLIED WARRANTIES OF
MERCHANTABILITY AND FITNESS.
"""

UNLICENSE_TEXT = """This is free and unencumbered software released into the public domain.

Anyone is free to copy, modify, publish, use, compile, sell, or
distribute this software, either in source code form or as a compiled
binary, for any purpose, commercial or non-commercial, and by any
means.

For more information, please refer to <https://unlicense.org>
"""

CC0_TEXT = """Creative Commons Legal Code

CC0 1.0 Universal

    CREATIVE COMMONS CORPORATION IS NOT A LAW FIRM AND DOES NOT PROVIDE
    LEGAL SERVICES. DISTRIBUTION OF THIS DOCUMENT DOES NOT CREATE AN
    ATTORNEY-CLIENT RELATIONSHIP.
"""

ZLIB_TEXT = """zlib License

  (C) 1995-2017 Jean-loup Gailly and Mark Adler

  This software is provided 'as-is', without any express or implied
  warranty.  In no event will the authors be held liable for any damages
  arising from the use of this software.

  Permission is granted to anyone to use this software for any purpose,
  including commercial applications, and to alter it and redistribute it
  freely, subject to the following restrictions:

  1. The origin of this software must not be misrepresented; you must not
     claim that you wrote the original software.
  2. Altered source versions must be plainly marked as such, and must not be
     misrepresented as being the original software.
  3. This notice may not be removed or altered from any source distribution.
"""

_BOOST_BODY = """Permission is hereby granted, free of charge, to any person or organization
obtaining a copy of the software and accompanying documentation covered by
this license (the "Software") to use, reproduce, display, distribute,
execute, and transmit the Software, and to prepare derivative works of the
Software, and to permit third-parties to whom the Software is furnished to
do so, all subject to the following:

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED.
"""
BOOST_TEXT = "Boost Software License - Version 1.0 - August 17th, 2003\n\n" + _BOOST_BODY

CC0_NOTICE = """Written in 2015 by Sebastiano Vigna (vigna@acm.org)

To the extent possible under law, the author has dedicated all copyright
and related and neighboring rights to this software to the public domain
worldwide. This software is distributed without any warranty.

See <http://creativecommons.org/publicdomain/zero/1.0/>.
"""

PSF_TEXT = """PYTHON SOFTWARE FOUNDATION LICENSE VERSION 2
--------------------------------------------

1. This LICENSE AGREEMENT is between the Python Software Foundation
("PSF"), and the Individual or Organization ("Licensee") accessing and
otherwise using this software ("Python") in source or binary form and
its associated documentation.
"""

PYTHON_STACK_TEXT = PSF_TEXT + """
BEOPEN.COM LICENSE AGREEMENT FOR PYTHON 2.0
-------------------------------------------

BEOPEN PYTHON OPEN SOURCE LICENSE AGREEMENT VERSION 1

CNRI LICENSE AGREEMENT FOR PYTHON 1.6.1
---------------------------------------
"""


# --- PERMISSIVE ----------------------------------------------------------------


def test_permissive_contents():
    for spdx in ("MIT", "MIT-0", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "ISC",
                 "PSF-2.0", "Python-2.0", "Unlicense", "CC0-1.0", "0BSD", "Zlib", "BSL-1.0",
                 "X11", "NCSA", "UPL-1.0", "WTFPL", "HPND", "PostgreSQL", "BlueOak-1.0.0"):
        assert spdx in PERMISSIVE
    for spdx in ("GPL-2.0-only", "GPL-3.0-or-later", "LGPL-2.1-only", "AGPL-3.0-only",
                 "MPL-2.0", "EPL-2.0", "CDDL-1.0", "BSD-4-Clause", "Artistic-2.0",
                 "LicenseRef-Public-Domain", "CC-BY-4.0"):
        assert spdx not in PERMISSIVE


def test_permissive_ids_are_canonical_spdx():
    for spdx in PERMISSIVE:
        assert normalize_license(spdx) == spdx
        assert normalize_license(spdx.lower()) == spdx
        assert normalize_license(spdx.upper()) == spdx


# --- normalize_license -----------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("mit", "MIT"),
        ("MIT", "MIT"),
        ("  MIT License  ", "MIT"),
        ("The MIT License (MIT)", "MIT"),
        ("Expat", "MIT"),
        ("Apache-2.0", "Apache-2.0"),
        ("apache 2.0", "Apache-2.0"),
        ("Apache 2", "Apache-2.0"),
        ("Apache License 2.0", "Apache-2.0"),
        ("Apache Software License", "Apache-2.0"),
        ("Apache License, Version 2.0", "Apache-2.0"),
        ("The Apache Software License, Version 2.0", "Apache-2.0"),
        ("Apache License 1.1", "Apache-1.1"),
        ("BSD", "BSD-3-Clause"),
        ("BSD License", "BSD-3-Clause"),
        ("new BSD", "BSD-3-Clause"),
        ("Modified BSD License", "BSD-3-Clause"),
        ("BSD 3-Clause", "BSD-3-Clause"),
        ("3-clause BSD", "BSD-3-Clause"),
        ("BSD-3", "BSD-3-Clause"),
        ("simplified BSD", "BSD-2-Clause"),
        ("BSD 2-Clause License", "BSD-2-Clause"),
        ("FreeBSD", "BSD-2-Clause"),
        ("BSD-2-Clause-FreeBSD", "BSD-2-Clause"),
        ("BSD 4-Clause", "BSD-4-Clause"),
        ("GPLv3", "GPL-3.0-only"),
        ("GPL v3", "GPL-3.0-only"),
        ("GPLv3+", "GPL-3.0-or-later"),
        ("GPL-3.0", "GPL-3.0-only"),
        ("GPL-3.0+", "GPL-3.0-or-later"),
        ("GPL-3.0-or-later", "GPL-3.0-or-later"),
        ("gpl-2.0-only", "GPL-2.0-only"),
        ("GPLv2", "GPL-2.0-only"),
        ("GPL v2 or later", "GPL-2.0-or-later"),
        ("GNU General Public License version 2 or any later version", "GPL-2.0-or-later"),
        ("GPL", "GPL-1.0-or-later"),
        ("GNU GPL", "GPL-1.0-or-later"),
        ("LGPL", "LGPL-2.0-or-later"),
        ("LGPLv2.1", "LGPL-2.1-only"),
        ("LGPL-2.1+", "LGPL-2.1-or-later"),
        ("LGPLv3", "LGPL-3.0-only"),
        ("GNU Lesser General Public License v3 or later", "LGPL-3.0-or-later"),
        ("AGPLv3", "AGPL-3.0-only"),
        ("AGPL-3.0", "AGPL-3.0-only"),
        ("AGPL", "AGPL-3.0-or-later"),
        ("MPL 2.0", "MPL-2.0"),
        ("MPL-2.0", "MPL-2.0"),
        ("Mozilla Public License 2.0", "MPL-2.0"),
        ("MPL 1.1", "MPL-1.1"),
        ("EPL-2.0", "EPL-2.0"),
        ("Eclipse Public License 2.0", "EPL-2.0"),
        ("CDDL", "CDDL-1.0"),
        ("Python Software Foundation License", "PSF-2.0"),
        ("PSF", "PSF-2.0"),
        ("PSF License", "PSF-2.0"),
        ("PSF-2.0", "PSF-2.0"),
        ("Python", "Python-2.0"),
        ("Public Domain", "LicenseRef-Public-Domain"),
        ("public-domain", "LicenseRef-Public-Domain"),
        ("Unlicense", "Unlicense"),
        ("The Unlicense", "Unlicense"),
        ("CC0", "CC0-1.0"),
        ("CC0 1.0 Universal", "CC0-1.0"),
        ("cc0-1.0", "CC0-1.0"),
        ("ISC", "ISC"),
        ("ISC License (ISCL)", "ISC"),
        ("zlib/libpng", "Zlib"),
        ("zlib", "Zlib"),
        ("Boost Software License 1.0", "BSL-1.0"),
        ("0BSD", "0BSD"),
        ("Zero-Clause BSD", "0BSD"),
        ("WTFPL", "WTFPL"),
        ("X11", "X11"),
        ("UPL", "UPL-1.0"),
        ("PostgreSQL License", "PostgreSQL"),
        ("LicenseRef-Proprietary", "LicenseRef-Proprietary"),
        ("licenseref-foo-1", "LicenseRef-foo-1"),
    ],
)
def test_normalize_names(raw, expected):
    assert normalize_license(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("License :: OSI Approved :: MIT License", "MIT"),
        ("License :: OSI Approved :: BSD License", "BSD-3-Clause"),
        ("License :: OSI Approved :: Apache Software License", "Apache-2.0"),
        ("License :: OSI Approved :: Python Software Foundation License", "PSF-2.0"),
        ("License :: OSI Approved :: GNU General Public License v3 (GPLv3)", "GPL-3.0-only"),
        ("License :: OSI Approved :: GNU General Public License v3 or later (GPLv3+)",
         "GPL-3.0-or-later"),
        ("License :: OSI Approved :: GNU General Public License v2 (GPLv2)", "GPL-2.0-only"),
        ("License :: OSI Approved :: GNU General Public License (GPL)", "GPL-1.0-or-later"),
        ("License :: OSI Approved :: GNU Lesser General Public License v2 or later (LGPLv2+)",
         "LGPL-2.0-or-later"),
        ("License :: OSI Approved :: GNU Lesser General Public License v3 (LGPLv3)",
         "LGPL-3.0-only"),
        ("License :: OSI Approved :: GNU Library or Lesser General Public License (LGPL)",
         "LGPL-2.0-or-later"),
        ("License :: OSI Approved :: GNU Affero General Public License v3", "AGPL-3.0-only"),
        ("License :: OSI Approved :: GNU Affero General Public License v3 or later (AGPLv3+)",
         "AGPL-3.0-or-later"),
        ("License :: OSI Approved :: Mozilla Public License 2.0 (MPL 2.0)", "MPL-2.0"),
        ("License :: OSI Approved :: Mozilla Public License 1.0 (MPL)", "MPL-1.0"),
        ("License :: Public Domain", "LicenseRef-Public-Domain"),
        ("License :: OSI Approved :: ISC License (ISCL)", "ISC"),
        ("License :: OSI Approved :: The Unlicense (Unlicense)", "Unlicense"),
        ("License :: CC0 1.0 Universal (CC0 1.0) Public Domain Dedication", "CC0-1.0"),
        ("License :: OSI Approved :: zlib/libpng License", "Zlib"),
        ("License :: OSI Approved :: Boost Software License 1.0 (BSL-1.0)", "BSL-1.0"),
        ("License :: OSI Approved :: MIT No Attribution License (MIT-0)", "MIT-0"),
        ("License :: OSI Approved :: Zero-Clause BSD (0BSD)", "0BSD"),
        ("License :: OSI Approved :: Historical Permission Notice and Disclaimer (HPND)",
         "HPND"),
        ("License :: OSI Approved :: Universal Permissive License (UPL)", "UPL-1.0"),
        ("License :: OSI Approved :: University of Illinois/NCSA Open Source License", "NCSA"),
        ("License :: OSI Approved :: Blue Oak Model License (BlueOak-1.0.0)", "BlueOak-1.0.0"),
        ("License :: OSI Approved :: Eclipse Public License 2.0 (EPL-2.0)", "EPL-2.0"),
        ("License :: OSI Approved :: Common Development and Distribution License 1.0 (CDDL-1.0)",
         "CDDL-1.0"),
        ("License :: OSI Approved :: European Union Public Licence 1.2 (EUPL 1.2)", "EUPL-1.2"),
        ("License :: OSI Approved :: Python License (CNRI Python License)", "CNRI-Python"),
        ("License :: OSI Approved :: PostgreSQL License", "PostgreSQL"),
        ("License :: OSI Approved :: CMU License (MIT-CMU)", "MIT-CMU"),
    ],
)
def test_normalize_trove_classifiers(raw, expected):
    assert normalize_license(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("MIT OR Apache-2.0", "MIT OR Apache-2.0"),
        ("mit or apache-2.0", "MIT OR Apache-2.0"),
        ("(MIT OR Apache-2.0)", "MIT OR Apache-2.0"),
        ("(MIT OR Apache-2.0) AND BSD-3-Clause", "(MIT OR Apache-2.0) AND BSD-3-Clause"),
        ("Apache-2.0 WITH LLVM-exception", "Apache-2.0 WITH LLVM-exception"),
        ("apache-2.0 with llvm-exception", "Apache-2.0 WITH LLVM-exception"),
        ("GPL-2.0-only WITH Classpath-exception-2.0", "GPL-2.0-only WITH Classpath-exception-2.0"),
        ("GPL-2.0+ WITH Some-Unknown-exception", "GPL-2.0-or-later WITH Some-Unknown-exception"),
        ("MIT AND (Apache-2.0 OR BSD-2-Clause)", "MIT AND (Apache-2.0 OR BSD-2-Clause)"),
        ("((MIT))", "MIT"),
        ("MIT OR MIT", "MIT"),
        ("MIT OR (Apache-2.0 OR ISC)", "MIT OR Apache-2.0 OR ISC"),
        ("MIT OR Apache-2.0 AND ISC", "MIT OR (Apache-2.0 AND ISC)"),
        ("BSD-3-Clause AND 0BSD AND MIT AND Zlib AND CC0-1.0",
         "BSD-3-Clause AND 0BSD AND MIT AND Zlib AND CC0-1.0"),
        ("MPL-2.0 AND MIT", "MPL-2.0 AND MIT"),
        ("Apache License 2.0 or MIT", "Apache-2.0 OR MIT"),
        ("GPL or LGPL", "GPL-1.0-or-later OR LGPL-2.0-or-later"),
        ("MIT/Apache-2.0", "MIT OR Apache-2.0"),
        ("Apache-2.0+", "Apache-2.0+"),
        ("MIT OR LicenseRef-Custom", "MIT OR LicenseRef-Custom"),
    ],
)
def test_normalize_expressions(raw, expected):
    assert normalize_license(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "",
        "   ",
        "UNKNOWN",
        "unknown",
        "UNLICENSED",  # npm: proprietary, not the Unlicense
        "None",
        "Proprietary",
        "License :: Other/Proprietary License",
        "License :: OSI Approved",
        "SEE LICENSE IN LICENSE.txt",
        "Dual License",
        "MIT-style",
        "MIT OR",
        "OR MIT",
        "MIT AND AND Apache-2.0",
        "(MIT",
        "MIT)",
        "MIT OR NotARealLicense",
        "(MIT OR Apache-2.0) WITH LLVM-exception",
        "MIT WITH",
        "x" * 1000,
        "MIT " * 200,
    ],
)
def test_normalize_unknown(raw):
    assert normalize_license(raw) is None


def test_normalize_rejects_non_strings():
    assert normalize_license(42) is None  # type: ignore[arg-type]
    assert normalize_license(["MIT"]) is None  # type: ignore[arg-type]


def test_every_alias_maps_to_its_id():
    # Also catches two aliases colliding after key normalization.
    for spdx, aliases in licenses._ALIASES.items():
        for alias in aliases.split("|"):
            assert normalize_license(alias) == spdx, alias
            assert normalize_license(alias.upper()) == spdx, alias


def test_every_known_id_and_deprecated_id_normalizes():
    for spdx in licenses._OTHER_IDS:
        assert normalize_license(spdx) == spdx
    for old, new in licenses._DEPRECATED.items():
        assert normalize_license(old) == new


# --- to_expression ---------------------------------------------------------------


def test_to_expression():
    assert to_expression("MIT") == "MIT"
    assert to_expression("Apache License 2.0") == "Apache-2.0"
    assert to_expression(["MIT"]) == "MIT"
    assert to_expression(["MIT", "Apache 2.0"]) == "MIT AND Apache-2.0"
    assert to_expression(("MIT", "MIT", "BSD")) == "MIT AND BSD-3-Clause"
    assert to_expression(["MIT OR Apache-2.0", "ISC"]) == "(MIT OR Apache-2.0) AND ISC"
    assert to_expression(["MIT AND ISC", "Zlib"]) == "MIT AND ISC AND Zlib"
    assert to_expression(x for x in ["GPLv3", "MIT"]) == "GPL-3.0-only AND MIT"


def test_to_expression_empty_or_unknown():
    assert to_expression(None) is None
    assert to_expression("") is None
    assert to_expression([]) is None
    assert to_expression(["UNKNOWN"]) is None
    # An unknown member of an AND could forbid everything: whole is unknown.
    assert to_expression(["MIT", "Proprietary"]) is None
    assert to_expression(["MIT", None]) is None  # type: ignore[list-item]
    assert to_expression(42) is None  # type: ignore[arg-type]


# --- license_allowed -------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "MIT",
        "Apache-2.0",
        "MIT OR Apache-2.0",
        "MIT OR GPL-3.0-only",
        "GPL-3.0-only OR MIT",
        "MIT AND Apache-2.0",
        "(MIT OR Apache-2.0) AND BSD-3-Clause",
        "(GPL-2.0-only OR MIT) AND (Apache-2.0 OR LGPL-2.1-only)",
        "Apache-2.0 WITH LLVM-exception",
        "BSD-3-Clause AND 0BSD AND MIT AND Zlib AND CC0-1.0",
        "mit",  # ids compare case-insensitively
        "mit or gpl-3.0-only",
        "Apache-2.0+",
        "((MIT))",
        "(MIT OR Apache-2.0) AND Unicode-DFS-2016",
    ],
)
def test_allowed(expression):
    assert license_allowed(expression) is True


@pytest.mark.parametrize(
    "expression",
    [
        None,
        "",
        "   ",
        "GPL-3.0-only",
        "GPL-2.0-or-later",
        "LGPL-2.1-only",
        "AGPL-3.0-only",
        "MPL-2.0",
        "EPL-2.0",
        "BSD-4-Clause",
        "MIT AND GPL-3.0-only",
        "MPL-2.0 AND MIT",
        "(MIT OR Apache-2.0) AND GPL-2.0-only",
        "GPL-2.0-only WITH Classpath-exception-2.0",
        "LicenseRef-Public-Domain",
        "NotARealLicense",
        "MIT License",  # free-form, not an SPDX expression
        "MIT OR",
        "AND MIT",
        "(MIT",
        "MIT)",
        "()",
        "MIT Apache-2.0",
        "(MIT OR Apache-2.0) WITH LLVM-exception",
        "MIT WITH",
        "MIT WITH (LLVM-exception)",
        "MIT ! Apache-2.0",
        "(" * 200 + "MIT" + ")" * 200,
    ],
)
def test_not_allowed(expression):
    assert license_allowed(expression) is False


def test_allowed_custom_allowlist():
    assert license_allowed("LicenseRef-Public-Domain", PERMISSIVE | {"LicenseRef-Public-Domain"})
    assert license_allowed("MPL-2.0 AND MIT", {"MPL-2.0", "MIT"})
    assert not license_allowed("MIT", {"Apache-2.0"})
    assert not license_allowed("MIT", set())
    assert license_allowed("GPL-3.0+", {"GPL-3.0-or-later"})  # deprecated spelling
    # Allowlists from config files may use any case or deprecated spellings.
    assert license_allowed("MIT", frozenset({"mit"}))
    assert license_allowed("GPL-3.0-or-later", ["GPL-3.0+"])
    assert license_allowed("LicenseRef-Mine", ("LicenseRef-Mine",))
    assert not license_allowed("GPL-3.0-only", ["GPL-3.0-or-later"])


def test_allowed_accepts_normalize_output():
    for raw in ("MIT/Apache-2.0", "BSD License", "License :: OSI Approved :: MIT License",
                "Apache License 2.0 or MIT"):
        assert license_allowed(normalize_license(raw))
    assert not license_allowed(normalize_license("GPLv3"))
    assert not license_allowed(normalize_license("Public Domain"))


_IDS = st.sampled_from(["MIT", "Apache-2.0", "BSD-3-Clause", "GPL-3.0-only", "MPL-2.0",
                        "ISC", "LGPL-2.1-or-later", "LicenseRef-Public-Domain"])
_TREES = st.recursive(
    _IDS.map(lambda i: ("ID", i)),
    lambda kids: st.tuples(st.sampled_from(["AND", "OR"]), st.lists(kids, min_size=2, max_size=3)),
    max_leaves=8,
)


def _render_tree(node) -> str:
    if node[0] == "ID":
        return node[1]
    return "(" + f" {node[0]} ".join(_render_tree(c) for c in node[1]) + ")"


def _expected(node) -> bool:
    if node[0] == "ID":
        return node[1] in PERMISSIVE
    check = all if node[0] == "AND" else any
    return check(_expected(c) for c in node[1])


@settings(max_examples=200, deadline=None)
@given(_TREES)
def test_allowed_matches_boolean_semantics(tree):
    text = _render_tree(tree)
    assert license_allowed(text) == _expected(tree)
    normalized = normalize_license(text)
    assert normalized is not None
    assert normalize_license(normalized) == normalized  # idempotent
    assert license_allowed(normalized) == _expected(tree)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="()MITORAND WITHmitx-+.:", max_size=40) | st.text(max_size=40))
def test_never_raises(text):
    assert license_allowed(text) in (True, False)
    result = normalize_license(text)
    assert result is None or isinstance(result, str)
    assert detect_license_text(text) is None or isinstance(detect_license_text(text), str)


# --- detect_license_text ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MIT_TEXT, "MIT"),
        (MIT0_TEXT, "MIT-0"),
        (X11_TEXT, "X11"),
        (APACHE_TEXT, "Apache-2.0"),
        (GPL3_TEXT, "GPL-3.0-only"),
        (GPL2_TEXT, "GPL-2.0-only"),
        (LGPL21_TEXT, "LGPL-2.1-only"),
        (LGPL3_TEXT, "LGPL-3.0-only"),
        (AGPL3_TEXT, "AGPL-3.0-only"),
        (GPL_NOTICE, "GPL-3.0-or-later"),
        (MPL2_TEXT, "MPL-2.0"),
        (BSD2_TEXT, "BSD-2-Clause"),
        (BSD3_TEXT, "BSD-3-Clause"),
        (BSD4_TEXT, "BSD-4-Clause"),
        (ISC_TEXT, "ISC"),
        (ZERO_BSD_TEXT, "0BSD"),
        (UNLICENSE_TEXT, "Unlicense"),
        (CC0_TEXT, "CC0-1.0"),
        (CC0_NOTICE, "CC0-1.0"),
        (ZLIB_TEXT, "Zlib"),
        (BOOST_TEXT, "BSL-1.0"),
        (_BOOST_BODY, "BSL-1.0"),  # without its title it must still not look like MIT
        (PSF_TEXT, "PSF-2.0"),
        (PYTHON_STACK_TEXT, "Python-2.0"),
    ],
)
def test_detect_license_text(text, expected):
    assert detect_license_text(text) == expected


def test_detect_license_text_formatting_insensitive():
    markdown = "# MIT License\n\n" + MIT_TEXT.replace('"AS IS"', "**\u201cAS IS\u201d**")
    assert detect_license_text(markdown) == "MIT"
    assert detect_license_text(MIT_TEXT.replace("\n", "\r\n")) == "MIT"
    assert detect_license_text(" ".join(MIT_TEXT.lower().split())) == "MIT"
    assert detect_license_text(BSD3_TEXT.upper()) == "BSD-3-Clause"


def test_detect_license_text_first_license_wins():
    # Bundled third-party notices come after the project's own license.
    assert detect_license_text(MIT_TEXT + "\n\nThird party:\n" + APACHE_TEXT) == "MIT"
    assert detect_license_text(APACHE_TEXT + "\n\n" + MIT_TEXT) == "Apache-2.0"
    assert detect_license_text(BSD2_TEXT + "\n\nvendored/foo:\n" + BSD3_TEXT) == "BSD-2-Clause"


def test_detect_license_text_spdx_identifier_and_short_forms():
    assert detect_license_text("// SPDX-License-Identifier: MIT OR Apache-2.0\n") == (
        "MIT OR Apache-2.0"
    )
    assert detect_license_text("/* SPDX-License-Identifier: GPL-2.0+ */\nstuff") == (
        "GPL-2.0-or-later"
    )
    assert detect_license_text("MIT\n") == "MIT"
    # A tag deep inside bundled third-party notices is not the file's license.
    assert detect_license_text(
        APACHE_TEXT + "\n" * 50 + "x" * 2000 + "\nSPDX-License-Identifier: MIT\n"
    ) == "Apache-2.0"
    assert detect_license_text("GNU GENERAL PUBLIC LICENSE\n") == "GPL-1.0-or-later"
    assert detect_license_text("Apache-2.0") == "Apache-2.0"
    assert detect_license_text("Licensed under the Apache License, Version 2.0") == "Apache-2.0"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "\n\n",
        "Copyright (c) 2020 Example Corp. All rights reserved.",
        "This software is proprietary and confidential. Do not distribute.",
        "Lorem ipsum dolor sit amet, " * 50,
        # A GPL title and preamble with no version anywhere.
        "GNU GENERAL PUBLIC LICENSE\n\nThe licenses for most software are designed to take away"
        " your freedom to share and change it. By contrast, the GNU General Public License is"
        " intended to guarantee your freedom to share and change free software.",
        MIT_TEXT.split("THE SOFTWARE IS PROVIDED")[0] * 3,  # MIT grant without disclaimer
    ],
)
def test_detect_license_text_unknown(text):
    assert detect_license_text(text) is None


# --- detect_repo_license ---------------------------------------------------------


def _repo(tmp_path: pathlib.Path, files: dict[str, str | bytes]) -> pathlib.Path:
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"LICENSE": MIT_TEXT}, "MIT"),
        ({"LICENSE.txt": APACHE_TEXT}, "Apache-2.0"),
        ({"License.md": "# License\n\n" + BSD3_TEXT}, "BSD-3-Clause"),
        ({"LICENCE": BSD2_TEXT}, "BSD-2-Clause"),
        ({"COPYING": GPL3_TEXT}, "GPL-3.0-only"),
        ({"UNLICENSE": UNLICENSE_TEXT}, "Unlicense"),
        ({"LICENSE-MIT": MIT_TEXT, "LICENSE-APACHE": APACHE_TEXT}, "Apache-2.0 OR MIT"),
        ({"LICENSE": MIT_TEXT, "LICENSE.md": MIT_TEXT}, "MIT"),
        ({"COPYING": GPL3_TEXT, "COPYING.LESSER": LGPL3_TEXT}, "LGPL-3.0-only"),
        # Several licenses with no declared choice: all the code may need all of them.
        ({"COPYING": GPL2_TEXT, "LICENSE": MIT_TEXT}, "GPL-2.0-only AND MIT"),
        ({"LICENSE": MIT_TEXT, "COPYING": GPL3_TEXT}, "GPL-3.0-only AND MIT"),
        ({"LICENSE": MIT_TEXT, "LICENSE.txt": ISC_TEXT}, "ISC AND MIT"),
        # Files named after their licenses are the dual-license convention: a choice.
        ({"LICENSE.MIT": MIT_TEXT, "LICENSE.APACHE": APACHE_TEXT}, "Apache-2.0 OR MIT"),
        ({"LICENSE-MIT.txt": MIT_TEXT, "LICENSE-APACHE-2.0.md": APACHE_TEXT},
         "Apache-2.0 OR MIT"),
        ({"LICENSE_MIT": MIT_TEXT, "LICENSE_APACHE2": APACHE_TEXT}, "Apache-2.0 OR MIT"),
        ({"LICENSE-MIT": MIT_TEXT, "UNLICENSE": UNLICENSE_TEXT}, "MIT OR Unlicense"),
        ({"LICENSE-MIT": MIT_TEXT, "LICENSE-APACHE": APACHE_TEXT, "LICENSE": MIT_TEXT},
         "Apache-2.0 OR MIT"),
        # A name that does not match the text declares nothing.
        ({"LICENSE-MIT": GPL3_TEXT, "LICENSE-APACHE": APACHE_TEXT},
         "Apache-2.0 AND GPL-3.0-only"),
        # An unnamed third license is not part of the pair.
        ({"LICENSE-MIT": MIT_TEXT, "LICENSE-APACHE": APACHE_TEXT, "COPYING": GPL3_TEXT},
         "Apache-2.0 AND GPL-3.0-only AND MIT"),
        # A recognized LICENSE file beats manifest metadata.
        ({"LICENSE": MIT_TEXT, "package.json": '{"license": "ISC"}'}, "MIT"),
        # Files about bundled code and non-text files are not the project's license.
        ({"LICENSE": MIT_TEXT, "LICENSE-THIRD-PARTY": GPL3_TEXT}, "MIT"),
        ({"LICENSE.py": "# " + GPL3_TEXT, "package.json": '{"license": "MIT"}'}, "MIT"),
        ({"licenses.txt": GPL3_TEXT}, None),
        # Only the top level counts.
        ({"vendor/LICENSE": GPL3_TEXT, "sub/LICENSE": MIT_TEXT}, None),
        ({}, None),
        ({"README.md": "# hello"}, None),
    ],
)
def test_repo_license_files(tmp_path, files, expected):
    assert detect_repo_license(_repo(tmp_path, files)) == expected


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"package.json": json.dumps({"name": "x", "license": "MIT"})}, "MIT"),
        ({"package.json": json.dumps({"license": "(MIT OR Apache-2.0)"})}, "MIT OR Apache-2.0"),
        ({"package.json": json.dumps({"license": {"type": "BSD-3-Clause"}})}, "BSD-3-Clause"),
        ({"package.json": json.dumps({"licenses": [{"type": "MIT"}, {"type": "GPL-2.0"}]})},
         "GPL-2.0-only OR MIT"),
        ({"package.json": json.dumps({"license": "UNLICENSED"})}, None),
        ({"package.json": json.dumps({"license": "SEE LICENSE IN LICENSE.txt"})}, None),
        ({"pyproject.toml": '[project]\nname = "x"\nlicense = "Apache-2.0 OR MIT"\n'},
         "Apache-2.0 OR MIT"),
        ({"pyproject.toml": '[project]\nlicense = {text = "BSD License"}\n'}, "BSD-3-Clause"),
        ({"pyproject.toml": '[project]\nlicense = {file = "COPYRIGHT.txt"}\n',
          "COPYRIGHT.txt": ISC_TEXT}, "ISC"),
        ({"pyproject.toml": '[project]\nclassifiers = [\n'
                            '  "Programming Language :: Python",\n'
                            '  "License :: OSI Approved :: MIT License",\n]\n'}, "MIT"),
        ({"pyproject.toml": '[tool.poetry]\nname = "x"\nlicense = "MIT"\n'}, "MIT"),
        ({"setup.cfg": "[metadata]\nname = x\nlicense = Apache Software License\n"},
         "Apache-2.0"),
        # Classifiers cannot say "or": several of them all apply.
        ({"setup.cfg": "[metadata]\nclassifiers =\n    License :: OSI Approved :: MIT License\n"
                       "    License :: OSI Approved :: Apache Software License\n"},
         "Apache-2.0 AND MIT"),
        ({"setup.py": "from setuptools import setup\nsetup(name='x', license='MIT')\n"}, "MIT"),
        ({"Cargo.toml": '[package]\nname = "x"\nlicense = "MIT OR Apache-2.0"\n'},
         "MIT OR Apache-2.0"),
        ({"Cargo.toml": '[package]\nname = "x"\nlicense = "MIT/Apache-2.0"\n'},
         "MIT OR Apache-2.0"),
        ({"Cargo.toml": '[workspace]\nmembers = ["a"]\n[workspace.package]\nlicense = "Zlib"\n'},
         "Zlib"),
        ({"Cargo.toml": '[package]\nname = "x"\nlicense-file = "LEGAL"\n', "LEGAL": BOOST_TEXT},
         "BSL-1.0"),
        ({"composer.json": json.dumps({"license": "MIT"})}, "MIT"),
        ({"composer.json": json.dumps({"license": ["LGPL-2.1-only", "GPL-3.0-or-later"]})},
         "GPL-3.0-or-later OR LGPL-2.1-only"),
        ({"foo.gemspec": 'Gem::Specification.new do |s|\n  s.name = "foo"\n'
                         '  s.license = "MIT"\nend\n'}, "MIT"),
        ({"foo.gemspec": "Gem::Specification.new do |spec|\n"
                         "  spec.licenses = ['MIT', 'Ruby']\nend\n"}, "MIT AND Ruby"),
        ({"foo.gemspec": "Gem::Specification.new do |spec|\n"
                         "  spec.licenses = %w[Apache-2.0]\nend\n"}, "Apache-2.0"),
        ({"DESCRIPTION": "Package: foo\nVersion: 1.0\nLicense: MIT + file LICENSE\n"
                         "Encoding: UTF-8\n", "LICENSE": "YEAR: 2020\nCOPYRIGHT HOLDER: Foo\n"},
         "MIT"),
        ({"DESCRIPTION": "Package: foo\nLicense: GPL (>= 2)\n"}, "GPL-2.0-or-later"),
        ({"DESCRIPTION": "Package: foo\nLicense: GPL-2 | GPL-3\n"},
         "GPL-2.0-only OR GPL-3.0-only"),
        ({"DESCRIPTION": "Package: foo\nLicense: Apache License (== 2.0)\n"}, "Apache-2.0"),
        # Unrecognized LICENSE text: fall back to the explicit manifest id.
        ({"LICENSE": "Copyright 2020 Foo. See the website for terms.",
          "package.json": '{"license": "Apache-2.0"}'}, "Apache-2.0"),
        # package.json is preferred over later manifests.
        ({"package.json": '{"license": "ISC"}', "Cargo.toml": '[package]\nlicense = "MIT"\n'},
         "ISC"),
        # A manifest without a usable license does not stop the search.
        ({"package.json": '{"name": "x"}', "setup.py": "setup(license='BSD')"}, "BSD-3-Clause"),
    ],
)
def test_repo_license_metadata(tmp_path, files, expected):
    assert detect_repo_license(_repo(tmp_path, files)) == expected


RUST_README = """# foo

## License

Licensed under either of

 * Apache License, Version 2.0 ([LICENSE-APACHE](LICENSE-APACHE) or http://www.apache.org/licenses/LICENSE-2.0)
 * MIT license ([LICENSE-MIT](LICENSE-MIT) or http://opensource.org/licenses/MIT)

at your option.
"""


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        # A manifest expression naming every license found says how they combine.
        ({"LICENSE": MIT_TEXT, "COPYING": APACHE_TEXT,
          "Cargo.toml": '[package]\nname = "x"\nlicense = "MIT OR Apache-2.0"\n'},
         "MIT OR Apache-2.0"),
        ({"LICENSE": MIT_TEXT, "COPYING": GPL3_TEXT,
          "package.json": json.dumps({"license": "(MIT OR GPL-3.0-or-later)"})},
         "MIT OR GPL-3.0-or-later"),
        ({"LICENSE": MIT_TEXT, "COPYING": APACHE_TEXT,
          "pyproject.toml": '[project]\nname = "x"\nlicense = "Apache-2.0 OR MIT"\n'},
         "Apache-2.0 OR MIT"),
        # A manifest that names only one of them declares no choice.
        ({"LICENSE": MIT_TEXT, "COPYING": GPL3_TEXT, "package.json": '{"license": "MIT"}'},
         "GPL-3.0-only AND MIT"),
        ({"LICENSE": MIT_TEXT, "COPYING": GPL3_TEXT,
          "Cargo.toml": '[package]\nlicense = "MIT OR Apache-2.0"\n'},
         "GPL-3.0-only AND MIT"),
        # A README offering the licenses as alternatives.
        ({"LICENSE": MIT_TEXT, "COPYING": APACHE_TEXT, "README.md": RUST_README},
         "Apache-2.0 OR MIT"),
        ({"LICENSE": MIT_TEXT, "COPYING": GPL3_TEXT,
          "README.rst": "Foo\n===\n\nFoo is dual-licensed: use it under the MIT license or\n"
                        "the GNU General Public License v3, whichever suits you.\n"},
         "GPL-3.0-only OR MIT"),
        ({"LICENSE": MIT_TEXT, "COPYING": APACHE_TEXT,
          "README": "foo\n\nSPDX-License-Identifier: MIT OR Apache-2.0\n"},
         "Apache-2.0 OR MIT"),
        # A README that does not offer a choice, or not between these licenses.
        ({"LICENSE": MIT_TEXT, "COPYING": GPL3_TEXT,
          "README.md": "# foo\n\nThe core is MIT; the plugins are under the GPL.\n"},
         "GPL-3.0-only AND MIT"),
        ({"LICENSE": MIT_TEXT, "COPYING": GPL3_TEXT,
          "README.md": "# foo\n\nPass either of the flags. Licensed under the MIT license.\n"},
         "GPL-3.0-only AND MIT"),
    ],
)
def test_repo_license_declared_choice(tmp_path, files, expected):
    assert detect_repo_license(_repo(tmp_path, files)) == expected


def test_repo_with_a_copyleft_license_file_is_not_permissive(tmp_path):
    # The case: LICENSE (MIT) + COPYING (GPL-3.0) passed as "MIT OR GPL-3.0-only".
    mixed = detect_repo_license(_repo(tmp_path / "mixed", {"LICENSE": MIT_TEXT, "COPYING": GPL3_TEXT}))
    assert not license_allowed(mixed)
    dual = detect_repo_license(_repo(tmp_path / "dual", {"LICENSE-MIT": MIT_TEXT,
                                                           "LICENSE-APACHE": APACHE_TEXT}))
    assert license_allowed(dual) and license_allowed(dual, ["MIT"])
    declared = detect_repo_license(_repo(tmp_path / "declared", {
        "LICENSE": MIT_TEXT, "COPYING": GPL3_TEXT,
        "package.json": json.dumps({"license": "MIT OR GPL-3.0-only"})}))
    assert license_allowed(declared)


def test_license_ids():
    assert licenses.license_ids("(MIT OR Apache-2.0) AND GPL-2.0-only WITH Classpath-exception-2.0") == {
        "MIT", "Apache-2.0", "GPL-2.0-only"}
    assert licenses.license_ids("MIT") == {"MIT"}
    assert licenses.license_ids("MIT OR") == frozenset()
    assert licenses.license_ids(None) == frozenset()


@pytest.mark.parametrize(
    "files",
    [
        {"package.json": "{not json"},
        {"package.json": "[1, 2]"},
        {"package.json": '{"license": 5}'},
        {"package.json": b"\xff\xfe\x00garbage"},
        {"pyproject.toml": "[project\nlicense = "},
        {"pyproject.toml": "project = 3\n"},
        {"pyproject.toml": '[project]\nlicense = 7\n'},
        {"pyproject.toml": '[project]\nlicense = {file = "../../../etc/passwd"}\n'},
        {"setup.cfg": "no section header\nlicense = MIT\n"},
        {"Cargo.toml": "[package\n"},
        {"Cargo.toml": '[package]\nlicense-file = "missing.txt"\n'},
        {"composer.json": '{"license": {"weird": true}}'},
        {"DESCRIPTION": "Package: foo\nLicense: file LICENSE\n"},
        {"LICENSE": b"\x00\x01\x02\x03" * 100},
        {"LICENSE": ""},
    ],
)
def test_repo_license_malformed_is_absent(tmp_path, files):
    assert detect_repo_license(_repo(tmp_path, files)) is None


def test_repo_license_outside_file_not_read(tmp_path):
    (tmp_path / "OUTSIDE").write_text(MIT_TEXT)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "pyproject.toml").write_text('[project]\nlicense = {file = "../OUTSIDE"}\n')
    assert detect_repo_license(repo) is None


def test_repo_license_unreadable_entries(tmp_path):
    (tmp_path / "LICENSE").mkdir()  # a directory named LICENSE is not a license file
    (tmp_path / "COPYING").symlink_to(tmp_path / "does-not-exist")
    (tmp_path / "package.json").write_text('{"license": "MIT"}')
    assert detect_repo_license(tmp_path) == "MIT"


def test_repo_license_bad_dirs(tmp_path):
    assert detect_repo_license(tmp_path / "missing") is None
    (tmp_path / "file").write_text("x")
    assert detect_repo_license(tmp_path / "file") is None
    (tmp_path / "file").unlink()
    (tmp_path / "LICENSE").write_text(ISC_TEXT)
    assert detect_repo_license(str(tmp_path)) == "ISC"  # type: ignore[arg-type]


def test_repo_license_reads_bounded_prefix(tmp_path):
    # The license is found in the first 256 KB; the rest is never read.
    (tmp_path / "LICENSE").write_text(MIT_TEXT + "x" * (2 * 1024 * 1024))
    assert detect_repo_license(tmp_path) == "MIT"
    (tmp_path / "LICENSE").write_text("x" * (300 * 1024) + MIT_TEXT)
    assert detect_repo_license(tmp_path) is None


def test_repo_license_case_insensitive_names(tmp_path):
    _repo(tmp_path, {"license.TXT": ZLIB_TEXT, "PACKAGE.JSON": '{"license": "MIT"}'})
    assert detect_repo_license(tmp_path) == "Zlib"


# --- distribution_license --------------------------------------------------------


def _metadata(**fields: str | list[str]) -> email.message.Message:
    msg = email.message.Message()
    for name, value in fields.items():
        for item in value if isinstance(value, list) else [value]:
            msg[name.replace("_", "-")] = item
    return msg


def test_distribution_license_expression_first():
    md = _metadata(License_Expression="MIT OR Apache-2.0", License="GPL",
                   Classifier=["License :: OSI Approved :: GNU General Public License (GPL)"])
    assert distribution_license(md) == "MIT OR Apache-2.0"


def test_distribution_license_field():
    assert distribution_license(_metadata(License="Apache 2.0")) == "Apache-2.0"
    assert distribution_license(_metadata(License="BSD")) == "BSD-3-Clause"
    assert distribution_license(_metadata(License="MPL-2.0 AND MIT")) == "MPL-2.0 AND MIT"


def test_distribution_license_full_text_in_license_field():
    # Many packages paste their whole LICENSE into the field (folded lines).
    assert distribution_license(_metadata(License=BSD3_TEXT.replace("\n", "\n        "))) == (
        "BSD-3-Clause"
    )


def test_distribution_license_junk_falls_through_to_classifiers():
    md = _metadata(
        License="UNKNOWN",
        Classifier=["Programming Language :: Python :: 3",
                    "License :: OSI Approved :: MIT License",
                    "License :: OSI Approved :: Apache Software License",
                    "License :: OSI Approved :: MIT License"],
    )
    assert distribution_license(md) == "Apache-2.0 AND MIT"
    md = _metadata(License_Expression="NotAnId",
                   Classifier=["License :: OSI Approved :: ISC License (ISCL)"])
    assert distribution_license(md) == "ISC"


def test_distribution_license_choice_only_when_declared():
    # A permissive classifier next to a copyleft one is not a choice: both apply.
    md = _metadata(Classifier=["License :: OSI Approved :: MIT License",
                               "License :: OSI Approved :: GNU General Public License v3 (GPLv3)"])
    assert distribution_license(md) == "GPL-3.0-only AND MIT"
    assert not license_allowed(distribution_license(md))
    # The License fields can say OR, and then it is a choice.
    md = _metadata(License_Expression="MIT OR GPL-3.0-only")
    assert license_allowed(distribution_license(md))
    md = _metadata(License="MIT or GPLv3",
                   Classifier=["License :: OSI Approved :: GNU General Public License v3 (GPLv3)"])
    assert distribution_license(md) == "MIT OR GPL-3.0-only"


def test_distribution_license_nothing_known():
    assert distribution_license(_metadata(Name="x")) is None
    md = _metadata(License="", Classifier=["License :: OSI Approved"])
    assert distribution_license(md) is None
    md = _metadata(Classifier=["License :: Other/Proprietary License"])
    assert distribution_license(md) is None
    assert distribution_license(None) is None


def test_distribution_license_plain_mapping():
    assert distribution_license({"License": "MIT"}) == "MIT"
    assert distribution_license({"Classifier": "License :: OSI Approved :: BSD License"}) == (
        "BSD-3-Clause"
    )


def test_distribution_license_installed_environment():
    results = {}
    for dist in importlib.metadata.distributions():
        result = distribution_license(dist.metadata)
        assert result is None or normalize_license(result) == result
        name = dist.metadata.get("Name")
        if name:
            results[name.lower().replace("_", "-")] = result
    assert results, "no distributions found"
    # Present in the project's test environment; checked against their metadata.
    expected = {"pytest": "MIT", "pyarrow": "Apache-2.0", "pydantic": "MIT",
                "pluggy": "MIT", "hypothesis": "MPL-2.0", "typing-extensions": "PSF-2.0"}
    for name, spdx in expected.items():
        if name in results:
            assert results[name] == spdx, name
    if "numpy" in results:
        assert "BSD-3-Clause" in results["numpy"]
        assert license_allowed(results["numpy"])
    if "hypothesis" in results:
        assert not license_allowed(results["hypothesis"])


# --- through a corpus build ----------------------------------------------------------


def _module(name: str) -> str:
    """A small parseable module, unique per name so dedup keeps each one."""
    return "".join(f"def {name}_{i}(x):\n    return x * {i} + len('{name}')\n\n\n" for i in range(6))


def test_build_drops_a_repository_whose_licenses_all_apply(tmp_path):
    import pyarrow.parquet as pq

    from codekiln.cli import main

    repos = tmp_path / "repos"
    _repo(repos / "mixed", {"LICENSE": MIT_TEXT, "COPYING": GPL3_TEXT, "mixed.py": _module("mixed")})
    _repo(repos / "dual", {"LICENSE-MIT": MIT_TEXT, "LICENSE-APACHE": APACHE_TEXT,
                           "dual.py": _module("dual")})
    _repo(repos / "declared", {"LICENSE": MIT_TEXT, "COPYING": APACHE_TEXT,
                               "Cargo.toml": '[package]\nname = "x"\nlicense = "MIT OR Apache-2.0"\n',
                               "declared.py": _module("declared")})
    out = tmp_path / "corpus"
    assert main(["data", "build", str(repos), "--out", str(out), "--quiet", "--keep-removed",
                 "--workers", "1"]) == 0
    kept = {d["repo"]: d["license"] for d in pq.read_table(out / "data").to_pylist()}
    assert kept == {"dual": "Apache-2.0 OR MIT", "declared": "MIT OR Apache-2.0"}
    removed = [d for d in pq.read_table(out / "removed").to_pylist() if d["reason"] != "language"]
    assert [(d["path"], d["reason"], d["license"]) for d in removed] == [
        ("mixed.py", "license", "GPL-3.0-only AND MIT")]
    report = json.loads((out / "report.json").read_text())
    assert report["dropped"]["license"]["docs"] == 1
