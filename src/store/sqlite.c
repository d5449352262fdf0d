/* placeholder: replaced by the module's implementation */ typedef int th_placeholder_t;
