;;; eglot_complete.el --- complete at a point with eglot and `codekiln lsp', in batch mode  -*- lexical-binding: t -*-

;; Run as: emacs --batch -l eglot_complete.el
;; Environment: CK_FILE (the Python file), CK_LINE (1-based), CK_COLUMN (0-based), CK_SERVER (the language
;; server's command as a JSON array), CK_OUT (where the JSON result goes).
;; Opens the file in python-mode, connects eglot to the server (waiting for it to start), reads the
;; candidates eglot's `completion-at-point' function offers at the point, then runs `completion-at-point'
;; itself, the command bound to C-M-i, and writes the candidates, their LSP items and the buffer's text
;; after the completion.

(require 'eglot)
(require 'json)

(defun ck--lsp-item (proxy)
  "The LSP completion item eglot attached to the candidate PROXY."
  (get-text-property 0 'eglot--lsp-item proxy))

(let* ((file (getenv "CK_FILE"))
       (line (string-to-number (getenv "CK_LINE")))
       (column (string-to-number (getenv "CK_COLUMN")))
       (server (append (json-parse-string (getenv "CK_SERVER") :array-type 'list) nil))
       (out (getenv "CK_OUT"))
       (eglot-sync-connect t)
       (eglot-connect-timeout 120)
       (result nil))
  (find-file file)
  (python-mode)
  (eglot '(python-mode) (cons 'transient (file-name-directory file)) 'eglot-lsp-server server "python")
  (unless (eglot-managed-p)
    (error "eglot did not start managing %s" file))
  (goto-char (point-min))
  (forward-line (1- line))
  (move-to-column column)
  (let* ((capf (eglot-completion-at-point))
         (table (nth 2 capf))
         (probe (buffer-substring-no-properties (nth 0 capf) (nth 1 capf)))
         (candidates (all-completions probe table)))
    (setq result
          (list :probe probe
                :candidates (vconcat (mapcar #'substring-no-properties candidates))
                :filter_texts (vconcat (mapcar (lambda (c) (or (plist-get (ck--lsp-item c) :filterText) ""))
                                               candidates))
                :details (vconcat (mapcar (lambda (c) (or (plist-get (ck--lsp-item c) :detail) "")) candidates)))))
  (let ((completion-in-region-function #'completion--in-region)
        (completion-at-point-functions '(eglot-completion-at-point)))
    (completion-at-point))
  (setq result (append result (list :text (buffer-substring-no-properties (point-min) (point-max))
                                    :point (1- (point)))))
  (with-temp-file out
    (insert (json-encode result)))
  (set-buffer-modified-p nil)
  (eglot-shutdown (eglot-current-server))
  (kill-emacs 0))
