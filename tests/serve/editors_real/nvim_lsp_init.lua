-- Neovim 0.7+ configuration used by tests/serve/test_real_editors.py: `codekiln lsp` as the omni-completion
-- (CTRL-X CTRL-O) source of Python buffers through Neovim's built-in LSP client.
-- Environment: CK_SERVER (the language server's command as a JSON array), CK_READY (a file written once the
-- server has answered `initialize`).
local cmd = vim.fn.json_decode(os.getenv("CK_SERVER"))
local ready = os.getenv("CK_READY")
vim.o.completeopt = "menuone"  -- show the menu (and its "codekiln" detail) even for a single item

vim.api.nvim_create_autocmd("FileType", {
  pattern = "python",
  callback = function(args)
    local id = vim.lsp.start_client({
      name = "codekiln",
      cmd = cmd,
      root_dir = vim.fn.getcwd(),
      on_init = function()
        vim.schedule(function() vim.fn.writefile({ "ready" }, ready) end)
      end,
    })
    vim.lsp.buf_attach_client(args.buf, id)
    vim.bo[args.buf].omnifunc = "v:lua.vim.lsp.omnifunc"
  end,
})
