/* Placeholder until the core lands in this session. */
int main(void)
{
    return 0;
}
