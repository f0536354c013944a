;;; lsp_mode_complete.el --- lsp-mode + company on `codekiln lsp', in batch mode  -*- lexical-binding: t -*-

;; Run as: emacs --batch -l lsp_mode_complete.el
;; Environment as for eglot_complete.el: CK_FILE, CK_LINE (1-based), CK_COLUMN (0-based), CK_SERVER (the
;; language server's command as a JSON array), CK_OUT (where the JSON result goes).
;; Registers codekiln as an lsp-mode client of python-mode, opens the file with its folder as the workspace,
;; waits for the server to initialize, asks company-mode (which lsp-mode sets up as its completion front end) to
;; complete at the point, takes its first candidate as a user's RET does, and writes the candidates and the
;; buffer's text after the completion.

(require 'json)
(require 'lsp-mode)
(require 'lsp-completion)
(require 'company)

(let* ((file (getenv "CK_FILE"))
       (dir (file-name-directory file))
       (line (string-to-number (getenv "CK_LINE")))
       (column (string-to-number (getenv "CK_COLUMN")))
       (server (append (json-parse-string (getenv "CK_SERVER") :array-type 'list) nil))
       (out (getenv "CK_OUT"))
       (result nil))
  (setq lsp-session-file (expand-file-name ".lsp-session" dir)
        lsp-enable-file-watchers nil
        lsp-enable-snippet nil
        lsp-headerline-breadcrumb-enable nil
        lsp-modeline-code-actions-enable nil
        lsp-modeline-diagnostics-enable nil
        lsp-lens-enable nil
        lsp-keep-workspace-alive nil
        lsp-restart 'ignore
        lsp-modeline-workspace-status-enable nil
        lsp-completion-provider :capf
        lsp-log-io nil)
  (lsp-register-client
   (make-lsp-client :new-connection (lsp-stdio-connection server)
                    :major-modes '(python-mode)
                    :add-on? t
                    :server-id 'codekiln))
  (lsp-workspace-folders-add dir)
  (find-file file)
  (python-mode)
  (lsp)
  (let ((deadline (+ (float-time) 120)))
    (while (and (< (float-time) deadline)
                (not (seq-some (lambda (w) (eq (lsp--workspace-status w) 'initialized)) (lsp-workspaces))))
      (accept-process-output nil 0.1)))
  (unless (lsp-workspaces)
    (error "lsp-mode started no workspace for %s" file))
  (goto-char (point-min))
  (forward-line (1- line))
  (move-to-column column)
  (let* ((capf (lsp-completion-at-point))
         (table (nth 2 capf))
         (probe (buffer-substring-no-properties (nth 0 capf) (nth 1 capf)))
         (candidates (all-completions probe table)))
    (setq result (list :probe probe
                       :candidates (vconcat (mapcar #'substring-no-properties candidates)))))
  (company-mode 1)
  (let ((company-backends '(company-capf))
        (completion-at-point-functions '(lsp-completion-at-point)))
    (company-manual-begin)
    (unless company-candidates
      (error "company offered no candidate"))
    (company-complete-selection))
  (setq result (append result (list :text (buffer-substring-no-properties (point-min) (point-max))
                                    :point (1- (point)))))
  (with-temp-file out
    (insert (json-encode result)))
  (set-buffer-modified-p nil)
  (kill-emacs 0))
